"""Load test: chest CT studies from concurrent DICOM senders (dcmtk storescu) into `sidecar up`.

    .venv/bin/python bench/load.py [--studies 50] [--slices 100] [--senders 4] [--replicas 1]

Starts `sidecar up` as a user does (bench/stack.py: fresh data dir, free loopback ports; or
reuses the one on `--stack DATA_DIR`, where `--replicas` does not apply), registers a facility
whose studies complete after a 5 s quiet period, writes one synthetic chest CT and copies of it
with fresh UIDs, and sends them from N concurrent `/usr/bin/storescu` processes (TCP_NODELAY=1,
one association per study). It waits for every study to reach a final state and prints studies
per hour (first byte sent → last study ready_for_review) against the 1,000/hour goal, per-stage
latency percentiles from the workflow store's state history, peak memory (VmHWM) per process,
and the exactly-once proof: each study's state history is the happy path, one ready_for_review
transition, one AI run, nothing on the dead-letter stream. `--smoke`: 2 studies of 40 slices.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pydicom
from pydicom.uid import generate_uid

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench.stack, run as a script

from sidecar_synth import generate  # noqa: E402

STORESCU = "/usr/bin/storescu"
HAPPY_PATH = ["received", "processed", "ai_complete", "ready_for_review"]
FINAL = {"ready_for_review", "ineligible", "preprocess_failed", "ai_failed"}
GOAL_PER_HOUR = 1000.0
STAGES = [("send (storescu)", "send_start", "send_end"),
          ("sent → received (5 s quiet period)", "send_end", "received"),
          ("preprocess", "received", "processed"),
          ("AI (Triton + normaliser)", "processed", "ai_complete"),
          ("findings → ready_for_review", "ai_complete", "ready_for_review"),
          ("total: first byte → ready", "send_start", "ready_for_review")]


@dataclass
class Study:
    uid: str
    folder: Path
    send_start: float = 0.0
    send_end: float = 0.0
    send_rc: int = -1


def make_studies(root: Path, count: int, slices: int) -> list[Study]:
    """One synthetic study and `count` copies of it, each with fresh Study/Series/SOP UIDs."""
    base = root / "base"
    generate("chest-ct", base, seed=7, slices=slices)
    datasets = [pydicom.dcmread(p) for p in sorted(base.glob("**/*.dcm"))]
    studies = []
    for i in range(count):
        study_uid, series_uid = generate_uid(), generate_uid()
        folder = root / f"study-{i:03d}"
        folder.mkdir()
        for j, ds in enumerate(datasets):
            ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
            ds.AccessionNumber = f"LOAD{i:05d}"
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            buffer = io.BytesIO()
            pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
            (folder / f"{j:04d}.dcm").write_bytes(buffer.getvalue())
        studies.append(Study(study_uid, folder))
    shutil.rmtree(base)
    return studies


def send(study: Study, port: int, ae_title: str) -> None:
    study.send_start = time.time()
    done = subprocess.run([STORESCU, "+sd", "+r", "-aet", ae_title, "-aec", "SIDECAR",
                           "127.0.0.1", str(port), str(study.folder)],
                          env={**os.environ, "TCP_NODELAY": "1"}, capture_output=True,
                          text=True)
    study.send_end, study.send_rc = time.time(), done.returncode
    if done.returncode != 0:
        print(f"storescu failed for {study.uid}: {done.stderr[-500:]}", file=sys.stderr)


def children(parent: int) -> dict[int, str]:
    """Every descendant of `parent`: pid → a short name."""
    by_parent: dict[int, list[int]] = {}
    names: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        by_parent.setdefault(ppid, []).append(int(entry.name))
        argv = [a.decode(errors="replace") for a in cmd if a]
        name = argv[argv.index("-m") + 1] if "-m" in argv else Path(argv[0]).name if argv else "?"
        names[int(entry.name)] = name
    out: dict[int, str] = {}
    todo = [parent]
    while todo:
        for pid in by_parent.get(todo.pop(), []):
            out[pid] = names.get(pid, "?")
            todo.append(pid)
    return out


def peak_memory(parent: int) -> dict[str, float]:
    """Peak resident memory (VmHWM, MiB) per process name, summed over same-named processes
    (replicas; Triton's python backend stubs count under triton_python_backend_stub)."""
    peaks: dict[str, float] = {}
    for pid, name in children(parent).items():
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                peaks[name] = peaks.get(name, 0.0) + int(line.split()[1]) / 1024
    return peaks


class PeakWatcher(threading.Thread):
    """Samples peak memory every few seconds (a restarted process keeps its predecessor's)."""

    def __init__(self, parent: int) -> None:
        super().__init__(daemon=True)
        self.parent, self.stop, self.peaks = parent, threading.Event(), {}  # type: ignore[var-annotated]

    def run(self) -> None:
        while not self.stop.wait(3.0):
            for name, mib in peak_memory(self.parent).items():
                self.peaks[name] = max(self.peaks.get(name, 0.0), mib)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def histories(conn: psycopg.Connection, facility: str,
              uids: list[str]) -> dict[str, list[tuple[str, float]]]:
    rows = conn.execute(
        "select s.study_instance_uid, t.to_state, extract(epoch from t.at) from studies s "
        "join facilities f on f.id = s.facility_id join state_transitions t on t.study_id = s.id "
        "where f.name = %s and s.study_instance_uid = any(%s) order by t.at, t.id",
        (facility, uids)).fetchall()
    out: dict[str, list[tuple[str, float]]] = {u: [] for u in uids}
    for uid, state, at in rows:
        out[uid].append((state, float(at)))
    return out


def main() -> int:
    from bench.stack import add_arguments, sidecar_up

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--studies", type=int, default=50)
    parser.add_argument("--slices", type=int, default=100)
    parser.add_argument("--senders", type=int, default=4)
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=3600.0)
    add_arguments(parser)
    args = parser.parse_args()
    if args.smoke:  # 40 slices: the smallest chest CT the model takes
        args.studies, args.slices, args.senders, args.timeout = 2, 40, 2, 300.0
    root = Path(tempfile.mkdtemp(prefix="sidecar-load-"))
    try:
        t0 = time.time()
        studies = make_studies(root / "studies", args.studies, args.slices)
        mb = sum(p.stat().st_size for s in studies for p in s.folder.iterdir()) / 1e6
        print(f"{args.studies} studies × {args.slices} slices ({mb:.0f} MB) written in "
              f"{time.time() - t0:.0f} s")
        replicas = [f"--replicas={args.replicas}"] if args.replicas != 1 else []
        with sidecar_up(args.stack, *replicas) as stack:
            facility = stack.add_facility("load", "--quiet-period", "5")
            runtime = {**stack.runtime(), "data_dir": str(stack.data_dir)}
            watcher = PeakWatcher(stack.pid)
            watcher.start()
            started = time.time()
            with ThreadPoolExecutor(args.senders) as pool:
                list(pool.map(lambda s: send(s, stack.ports["dicom"], facility.upper()),
                              studies))
            sent = time.time()
            print(f"sent in {sent - started:.0f} s by {args.senders} storescu senders "
                  f"({mb / (sent - started):.1f} MB/s); waiting for every study ...")
            uids = [s.uid for s in studies]
            with psycopg.connect(runtime["database_url"]) as conn:
                deadline = time.monotonic() + args.timeout
                while True:
                    hist = histories(conn, facility, uids)
                    done = [u for u, h in hist.items() if h and h[-1][0] in FINAL]
                    if len(done) == len(uids) or time.monotonic() > deadline:
                        break
                    time.sleep(1.0)
                runs = dict(conn.execute(
                    "select s.study_instance_uid, count(r.id) from studies s "
                    "left join ai_runs r on r.study_id = s.id "
                    "where s.study_instance_uid = any(%s) group by 1", (uids,)).fetchall())
            watcher.stop.set()
            watcher.join()
            report(studies, hist, runs, started, watcher.peaks, runtime, args)
        return 0 if all([h[0] for h in hist[u]] == HAPPY_PATH for u in uids) else 1
    finally:
        shutil.rmtree(root, ignore_errors=True)


def report(studies: list[Study], hist: dict[str, list[tuple[str, float]]],
           runs: dict[str, int], started: float, peaks: dict[str, float],
           runtime: dict, args: argparse.Namespace) -> None:
    ready = {u: dict(h) for u, h in hist.items()}
    finished = [r["ready_for_review"] for r in ready.values() if "ready_for_review" in r]
    span = max(finished) - started if finished else float("nan")
    per_hour = len(finished) / span * 3600 if finished else 0.0
    print(f"\n{len(finished)}/{len(studies)} studies ready_for_review in {span:.0f} s: "
          f"{per_hour:.0f} studies/hour = {per_hour / GOAL_PER_HOUR:.2f}× the "
          f"{GOAL_PER_HOUR:.0f}/hour goal (replicas {args.replicas}, {args.senders} senders, "
          f"{os.cpu_count()} CPUs, load average now {os.getloadavg()[0]:.1f})")
    print(f"\n{'stage':<36} {'p50 s':>8} {'p90 s':>8} {'p99 s':>8} {'max s':>8}")
    for name, a, b in STAGES:
        values = []
        for s in studies:
            marks = {"send_start": s.send_start, "send_end": s.send_end, **ready[s.uid]}
            if a in marks and b in marks:
                values.append(marks[b] - marks[a])
        if values:
            print(f"{name:<36} {percentile(values, .5):>8.1f} {percentile(values, .9):>8.1f} "
                  f"{percentile(values, .99):>8.1f} {max(values):>8.1f}")
    print(f"\n{'process':<36} {'peak RSS MiB':>12}")
    for name, mib in sorted(peaks.items(), key=lambda kv: -kv[1]):
        if mib >= 1:
            print(f"{name:<36} {mib:>12.0f}")
    paths = [[state for state, _ in hist[s.uid]] for s in studies]
    once = sum(p.count("ready_for_review") == 1 for p in paths)
    happy = sum(p == HAPPY_PATH for p in paths)
    one_run = sum(runs.get(s.uid, 0) == 1 for s in studies)
    failed_sends = sum(s.send_rc != 0 for s in studies)
    print(f"\nexactly once: {once}/{len(studies)} studies with one ready_for_review transition, "
          f"{happy}/{len(studies)} with the history {' → '.join(HAPPY_PATH)}, "
          f"{one_run}/{len(studies)} with one AI run; {failed_sends} failed sends; "
          f"dead letters: {dead_letters(runtime['nats_url'], Path(runtime['data_dir']))}")


def dead_letters(url: str, data_dir: Path) -> int:
    import asyncio

    import nats

    from sidecar_core.messaging.nats_auth import NatsAuth

    async def count() -> int:  # as the operator's NATS user of the stack
        nc = await nats.connect(servers=url.split(","),
                                **NatsAuth.of(data_dir, "operator").connect_options())
        try:
            return int((await nc.jetstream().stream_info("SIDECAR_DLQ")).state.messages)
        finally:
            await nc.close()

    return asyncio.run(count())


if __name__ == "__main__":
    sys.exit(main())
