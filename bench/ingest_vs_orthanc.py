"""Benchmark: dcmtk storescu into the sidecar's C-STORE SCP vs into Orthanc, same files, same host.

Run: .venv/bin/python bench/ingest_vs_orthanc.py [--runs 3] [--rss-instances 1000]
     [--stack DATA_DIR] [--smoke]
The sidecar is `sidecar up` as a user starts it (bench/stack.py: fresh data dir, free loopback
ports; or the one running on `--stack DATA_DIR`), the files sent to a facility of this bench
(completion at the end of the association); before each timed send both sides are quiet (the
sidecar's studies of the previous send have reached a final state, Orthanc is started fresh).
Workloads: a 300-slice 512x512 CT (0.5 MB/slice) and 100 small 64x64 instances, one association
each; optionally (--workloads ...,ct-4x100x512) four 100-slice CTs over four associations at
once; or (resend-300x512) the CT sent twice, timing the second send, where every instance
is a duplicate (a PACS retrying a study). Every run uses
fresh UIDs, so neither side short-circuits duplicates. The sidecar's C-STORE success means the
object and its index row are durable, so storescu's wall time counts only durable instances.
`--smoke`: one run of ten 64x64 instances, no RSS study. After each sidecar send: the mean time
per stage of the SCP (its `sidecar_ingest_stage_seconds` histogram) and each process's CPU ms per
instance. To A/B a change to the ingest service,
run the script in two checkouts.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.stack import Stack, add_arguments, print_breakdown, sidecar_up  # noqa: E402

STORESCU = "/usr/bin/storescu"
ORTHANC = "/usr/sbin/Orthanc"
STAGES = "sidecar_ingest_stage_seconds"
CALLING_AE = "BENCH"
NODELAY = {"TCP_NODELAY": "1"}


def write_series(folder: Path, pixels: list[np.ndarray], tag: str) -> str:
    """One study, one series; pixel arrays reused, UIDs fresh. Returns the study's UID."""
    folder.mkdir(parents=True)
    study, series = generate_uid(), generate_uid()
    for i, px in enumerate(pixels):
        meta = FileMetaDataset()
        sop = generate_uid()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CTImageStorage, sop
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, sop
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.AccessionNumber, ds.Modality, ds.PatientID = f"B{tag}"[:16], "CT", "BENCH"
        ds.PatientName, ds.StudyDate, ds.SeriesNumber = "Bench^Patient", "20240101", 1
        ds.InstanceNumber, ds.ImagePositionPatient = i + 1, [0, 0, float(i)]
        ds.ImageOrientationPatient, ds.PixelSpacing = [1, 0, 0, 0, 1, 0], [0.7, 0.7]
        ds.Rows, ds.Columns = px.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.PixelData = px.tobytes()
        pydicom.dcmwrite(folder / f"{i:05d}.dcm", ds, enforce_file_format=True)
    return str(study)


def pixels(n: int, size: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    base = rng.integers(-1024, 2000, (size, size), dtype=np.int16)
    return [np.roll(base, i, axis=0) for i in range(n)]


def storescu(port: int, aec: str, folder: Path, prefix: list[str] | None = None,
             associations: int = 1, aet: str = CALLING_AE) -> float:
    """Wall time of sending `folder` (one association), or of its sub-folders `0..N-1` with one
    storescu (one association) each, all started together."""
    folders = [folder] if associations == 1 else [folder / str(i) for i in range(associations)]
    t0 = time.perf_counter()
    procs = [subprocess.Popen([*(prefix or []), STORESCU, "+sd", "+r", "-aet", aet,
                               "-aec", aec, "127.0.0.1", str(port), str(f)],
                              env={**os.environ, **NODELAY}, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for f in folders]
    outputs = [p.communicate() for p in procs]
    elapsed = time.perf_counter() - t0
    for p, (out, err) in zip(procs, outputs, strict=True):
        if p.returncode != 0 or "E: " in out + err:
            code = p.returncode
            raise RuntimeError(f"storescu failed ({code}): {err[-2000:]}")
    return elapsed


class Orthanc:
    """Orthanc 1.10 in a private network namespace (only loopback), own storage dir."""

    def __init__(self, work: Path) -> None:
        self.work, self.port, self.http = work, 4242, 8042
        self.netns = work / "netns"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def prefix(self) -> list[str]:
        return ["nsenter", f"--net={self.netns}"]

    def start(self, storage: Path) -> None:
        if not self.netns.exists():
            self.netns.touch()
            subprocess.run(["unshare", f"--net={self.netns}", "true"], check=True)
            subprocess.run([*self.prefix, "ip", "link", "set", "lo", "up"], check=True)
        storage.mkdir(parents=True)
        cfg = {"Name": "bench", "StorageDirectory": str(storage / "db"),
               "IndexDirectory": str(storage / "db"), "DicomAet": "ORTHANC",
               "DicomPort": self.port, "HttpPort": self.http, "RemoteAccessAllowed": False,
               "AuthenticationEnabled": False, "DicomCheckCalledAet": False, "Plugins": []}
        (storage / "orthanc.json").write_text(json.dumps(cfg))
        self.proc = subprocess.Popen([*self.prefix, ORTHANC, str(storage / "orthanc.json")],
                                     env={**os.environ, **NODELAY},
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while subprocess.run([*self.prefix, "/usr/bin/echoscu", "-aec", "ORTHANC", "127.0.0.1",
                              str(self.port)], capture_output=True).returncode != 0:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("Orthanc did not start")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(30)
            self.proc = None

    def close(self) -> None:
        self.stop()
        if self.netns.exists():
            subprocess.run(["umount", str(self.netns)], check=False)


FINAL = ("ready_for_review", "ineligible", "preprocess_failed", "ai_failed")


def settle(stack: Stack, uids: list[str], timeout: float = 900.0) -> None:
    """Waits until the sidecar's studies UIDS are in a final state: its preprocess and AI work
    on what was sent is over, the machine quiet again for the next measurement."""
    import psycopg

    deadline = time.monotonic() + timeout
    with psycopg.connect(stack.runtime()["database_url"], autocommit=True) as conn:
        while True:
            done = conn.execute("select count(*) from studies where study_instance_uid = any(%s)"
                                " and state = any(%s)", (uids, list(FINAL))).fetchone()
            if done and done[0] == len(uids):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"sidecar studies not final after {timeout:.0f} s")
            time.sleep(0.5)


def rss_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process, MB."""
    fields = dict(line.split(":", 1) for line in
                  Path(f"/proc/{pid}/status").read_text().splitlines())
    return (int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--rss-instances", type=int, default=1000)
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--workloads", default="ct-300x512,small-100x64",
                    help="comma-separated subset of: ct-300x512, small-100x64, ct-4x100x512 "
                         "(four associations at once, 100 instances each), resend-300x512 "
                         "(the CT sent twice; the second, all-duplicate send is timed)")
    add_arguments(ap)
    args = ap.parse_args(argv)
    if args.smoke:
        args.runs, args.rss_instances, args.workloads = 1, 0, "smoke-10x64"
    for tool in (STORESCU, ORTHANC):
        if not Path(tool).exists():
            subprocess.run(["apt-get", "install", "-y", "orthanc", "dcmtk"], check=True,
                           stdout=subprocess.DEVNULL)
    work = Path(args.work or tempfile.mkdtemp(prefix="sidecar-bench-"))
    every = {"ct-300x512": (300, 512, 1, False), "small-100x64": (100, 64, 1, False),
             "ct-4x100x512": (100, 512, 4, False), "resend-300x512": (300, 512, 1, True),
             "smoke-10x64": (10, 64, 1, False)}
    workloads = {name: every[name] for name in args.workloads.split(",")}
    results: dict[str, dict[str, list[float]]] = {w: {"sidecar": [], "orthanc": []}
                                                   for w in workloads}
    orthanc = Orthanc(work)
    with sidecar_up(args.stack) as stack:
        facility = stack.add_facility("ingest", "--completion", "association")
        ae = facility.upper()
        try:
            for name, (n, size, assocs, resend) in workloads.items():
                px = pixels(n, size, seed=n)
                total = n * assocs
                for run in range(args.runs):
                    order = ["sidecar", "orthanc"] if run % 2 == 0 else ["orthanc", "sidecar"]
                    for system in order:
                        folder = work / "data" / f"{name}-{run}-{system}"
                        uids = [write_series(folder / str(a) if assocs > 1 else folder, px,
                                             f"{run}{system[0]}{a}") for a in range(assocs)]
                        store = work / "store" / f"{name}-{run}-{system}"
                        # Each run starts from a quiet disk: the previous run's writeback
                        # (of either system) must not bleed into this measurement.
                        os.sync()
                        if system == "sidecar":
                            if resend:
                                storescu(stack.ports["dicom"], "SIDECAR", folder, aet=ae)
                                settle(stack, uids)
                                os.sync()
                            readings = (stack.stage_seconds("ingest", STAGES),
                                        stack.cpu_seconds())
                            elapsed = storescu(stack.ports["dicom"], "SIDECAR", folder,
                                               associations=assocs, aet=ae)
                            print_breakdown(f"{name} run {run + 1}", total,
                                            (readings[1], stack.cpu_seconds()),
                                            (readings[0], stack.stage_seconds("ingest", STAGES)),
                                            elapsed)
                            settle(stack, uids)
                        else:
                            orthanc.start(store)
                            if resend:
                                storescu(orthanc.port, "ORTHANC", folder, orthanc.prefix)
                            elapsed = storescu(orthanc.port, "ORTHANC", folder, orthanc.prefix,
                                               associations=assocs)
                            orthanc.stop()
                        results[name][system].append(total / elapsed)
                        print(f"{name} run {run + 1} {system:8s} {total / elapsed:7.1f} inst/s "
                              f"({elapsed:.2f} s)", flush=True)
                        shutil.rmtree(folder)
                        shutil.rmtree(store, ignore_errors=True)
            print()
            for name, by in results.items():
                s, o = (float(np.median(by[k])) for k in ("sidecar", "orthanc"))
                print(f"{name:14s} sidecar {s:7.1f}/s  orthanc {o:7.1f}/s  "
                      f"ratio sidecar/orthanc {s / o:.2f} (median of {args.runs})")
            if args.rss_instances:
                folder = work / "data" / "rss"
                uid = write_series(folder, pixels(args.rss_instances, 512, seed=7), "rss")
                ingest = stack.children()["ingest_svc.main"]
                Path(f"/proc/{ingest}/clear_refs").write_text("5")  # VmHWM := VmRSS
                before = rss_mb(ingest)[0]
                elapsed = storescu(stack.ports["dicom"], "SIDECAR", folder, aet=ae)
                rss, hwm = rss_mb(ingest)
                print(f"\n{args.rss_instances}-instance study (512x512 CT): "
                      f"{args.rss_instances / elapsed:.1f} inst/s; ingest process RSS "
                      f"{before:.0f} MB before, peak (VmHWM) {hwm:.0f} MB, {rss:.0f} MB after")
                settle(stack, [uid])
        finally:
            orthanc.close()
            if args.work is None:
                shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
