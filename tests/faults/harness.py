"""A `sidecar up` to break: its real child processes, its store, its bus and the checks after."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

from sidecar_synth import generate
from tests.acceptance.stack import Stack, run_cli

HAPPY_PATH = ["received", "processed", "ai_complete", "ready_for_review"]
FINAL = {"ready_for_review", "ineligible", "preprocess_failed", "ai_failed"}
MODULES = {"workflow": "workflow_svc.main", "ingest": "ingest_svc.main",
           "preprocess": "imaging_svc.main", "normalizer": "normalizer_svc.main",
           "gateway": "review_gateway.main"}
# The reference chest CT model finds its nodules in a study this size; rendering and inference
# take seconds on this machine, long enough to be caught mid-job.
CHEST = {"slices": 64, "rows": 256, "cols": 256, "fov_mm": 300.0}


def children(parent: int) -> list[tuple[int, str]]:
    """(pid, command line) of every live direct child of `parent`, read from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid != parent or stat.rsplit(")", 1)[1].split()[0] == "Z":
                continue
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError, IndexError):
            continue
        found.append((int(entry.name), cmd))
    return found


@dataclass
class Sent:
    study_instance_uid: str
    study_id: uuid.UUID
    folder: Path


class Faulty:
    """Operations on a running stack: who runs what, kill it, read the store, wait, check."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        info = json.loads((stack.data_dir / "runtime.json").read_text())
        self.database_url: str = info["database_url"]
        self.nats_url: str = info["nats_url"]
        self.adopted: list[subprocess.Popen[bytes]] = []
        self.expected_dead_letters = 0

    # ---- processes -------------------------------------------------------------------------

    def pids(self, name: str) -> list[int]:
        """Live processes of one service (replicas included)."""
        assert self.stack.proc is not None
        module = MODULES.get(name, name)
        return [pid for pid, cmd in children(self.stack.proc.pid)
                if f"-m {module}" in cmd or (name not in MODULES and name in cmd)]

    def kill(self, name: str) -> int:
        [pid, *_] = self.pids(name)
        os.kill(pid, signal.SIGKILL)
        return pid

    def restart_server(self, name: str, pause_s: float = 1.0, sig: int = signal.SIGKILL
                       ) -> None:
        """SIGKILL of an infrastructure server (nats-server, tritonserver) and a start of the
        same server on the same port and data after `pause_s`."""
        pid = self.server_pid(name)
        command = Command.of(pid)
        stop_pid(pid, sig)
        time.sleep(pause_s)
        self.adopted.append(command.start())

    def server_pid(self, name: str) -> int:
        """The live process of an infrastructure server (nats-server, tritonserver): the
        stack's own, or the one an earlier test started in its place (`restart_server`)."""
        [pid] = self.pids(name) or [a.pid for a in self.adopted
                                    if a.poll() is None and name in str(a.args)]
        return pid

    def wait_restarted(self, name: str, old: int, timeout: float = 60) -> int:
        return int(self.wait(lambda: next((p for p in self.pids(name) if p != old), None),
                             f"{name} restarted", timeout))

    # ---- store -----------------------------------------------------------------------------

    def rows(self, sql: str, **params: Any) -> list[dict[str, Any]]:
        with psycopg.connect(self.database_url, row_factory=dict_row) as conn:
            return list(conn.execute(sql, params).fetchall())

    def state(self, study_id: uuid.UUID) -> str | None:
        rows = self.rows("select state from studies where id = %(id)s", id=study_id)
        return rows[0]["state"] if rows else None

    def history(self, study_id: uuid.UUID) -> list[str]:
        return [r["to_state"] for r in self.rows(
            "select to_state from state_transitions where study_id = %(id)s order by at, id",
            id=study_id)]

    def audit(self, study_id: uuid.UUID, event_type: str = "") -> list[dict[str, Any]]:
        return self.rows(
            "select type, actor, job_id, attempt, error_class, error_message, context "
            "from audit_events where study_id = %(id)s and (%(t)s = '' or type = %(t)s) "
            "order by seq", id=study_id, t=event_type)

    # ---- driving ---------------------------------------------------------------------------

    def send_raw(self, facility: str, folder: Path, complete: bool = True
                 ) -> subprocess.CompletedProcess[str]:
        """`sidecar ingest FOLDER` over the Ingest RPC, as an operator runs it."""
        args = ["ingest", str(folder), "--facility", facility, "--via", "grpc",
                "--target", self.stack.address("ingest"),
                "--data-dir", str(self.stack.data_dir)]  # its operator credential
        return run_cli(*args, *(["--complete"] if complete else []), timeout=300)

    def send(self, facility: str, folder: Path, complete: bool = True,
             retry_s: float = 0.0) -> Sent:
        """Sends a study; with `retry_s`, sends it again (as a PACS does) while the sidecar
        answers "unavailable, send it again later", for up to that long."""
        deadline = time.monotonic() + retry_s
        while True:
            done = self.send_raw(facility, folder, complete)
            if done.returncode == 0 or time.monotonic() > deadline:
                break
            assert "send it again" in done.stdout + done.stderr, done.stdout + done.stderr
            time.sleep(1.0)
        assert done.returncode == 0, done.stdout + done.stderr
        uid = json.loads((folder / "ground_truth.json").read_text())["study_instance_uid"]
        return Sent(uid, self.study_id(facility, uid), folder)

    def chest(self, root: Path, seed: int, **opts: Any) -> Path:
        folder = root / f"chest-{seed}"
        generate("chest-ct", folder, seed=seed, **{**CHEST, **opts})
        return folder

    def study_id(self, facility: str, uid: str) -> uuid.UUID:
        rows = self.wait(lambda: self.rows(
            "select s.id from studies s join facilities f on f.id = s.facility_id "
            "where f.name = %(f)s and s.study_instance_uid = %(u)s", f=facility, u=uid),
            f"study {uid} registered", 60)
        return uuid.UUID(str(rows[0]["id"]))

    @staticmethod
    def wait(check: Callable[[], Any], what: str, timeout: float = 120,
             interval: float = 0.05) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            try:
                value = check()
            except psycopg.OperationalError:  # the test's own reads while PostgreSQL restarts
                value = None
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
            time.sleep(interval)

    def wait_final(self, study_id: uuid.UUID, timeout: float = 240) -> str:
        try:
            return str(self.wait(lambda: (s := self.state(study_id)) in FINAL and s,
                                 f"study {study_id} final", timeout, 0.2))
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}: states {self.history(study_id)}, audit "
                               f"{[e['type'] for e in self.audit(study_id)]}") from None

    def wait_audit(self, study_id: uuid.UUID, event_type: str, timeout: float = 120
                   ) -> dict[str, Any]:
        return dict(self.wait(lambda: self.audit(study_id, event_type), event_type,
                              timeout)[0])

    # ---- the checks after every fault ------------------------------------------------------

    def assert_exactly_once(self, study_ids: Iterable[uuid.UUID],
                            path: list[str] | None = None) -> None:
        """Each study went through its states once, ran each model once, has one set of
        assets and one set of findings per completed run, and nothing is left on the bus."""
        for sid in study_ids:
            history = self.history(sid)
            assert history == (path or HAPPY_PATH), f"{sid}: {history}"
            changes = [e["context"]["to"] for e in self.audit(sid, "study.state_changed")]
            assert changes == history, f"one study.state_changed per transition: {changes}"
            runs = self.rows("select model_name, series_id, status from ai_runs "
                             "where study_id = %(id)s", id=sid)
            keys = [(r["model_name"], r["series_id"]) for r in runs]
            assert len(keys) == len(set(keys)), f"a model ran twice: {runs}"
            assets = self.rows("select kind, preset, slice_index, series_id, sop_instance_uid, "
                               "frame from assets where study_id = %(id)s", id=sid)
            akeys = [tuple(a.values()) for a in assets]
            assert len(akeys) == len(set(akeys)), "one set of assets"
            per_run = self.rows("select ai_run_id, count(*) as n from findings "
                                "where study_id = %(id)s group by ai_run_id", id=sid)
            done = [r for r in runs if r["status"] == "completed"]
            assert len(per_run) <= len(done), f"findings of runs that did not complete: {per_run}"
        self.assert_bus_drained()

    def assert_bus_drained(self, timeout: float = 180) -> None:
        """No job waits or is in hand on any consumer; the dead-letter stream holds only the
        letters a test meant to cause (`expected_dead_letters`). The default outlasts any ack wait
        (10 s by default, sidecar_core.messaging.subjects.ACK_WAIT_S; up to 120 s where an
        operator's SIDECAR_CONSUMER_OVERRIDES says so) plus a retry's backoff: a message whose
        ack was lost with a killed NATS node or worker stays in hand until then and is
        redelivered (a duplicate the workers must drop, which assert_exactly_once then checks)."""
        def drained() -> bool:
            return all(p == (0, 0) for p in self.consumers().values())

        try:
            self.wait(drained, "every consumer drained", timeout, 0.5)
        except TimeoutError:
            raise AssertionError(f"consumers not drained: {self.consumers()}") from None
        assert self.dead_letters() == self.expected_dead_letters

    def consumers(self) -> dict[str, tuple[int, int]]:
        return dict(_nats(self.nats_url, _consumer_counts, self.stack.data_dir))

    def dead_letters(self) -> int:
        return int(_nats(self.nats_url, _dlq_count, self.stack.data_dir))


def _nats(url: str, fn: Callable[[Any], Any], data_dir: Path | None = None) -> Any:
    """`fn` on a JetStream context; as the stack's operator user (its DATA_DIR's nkey seed and
    certificate) when `data_dir` is given and the stack embeds NATS."""
    import asyncio

    import nats

    from sidecar_core.messaging.nats_auth import NatsAuth

    options = NatsAuth.of(data_dir, "operator").connect_options() if data_dir else {}

    async def go() -> Any:
        nc = await nats.connect(servers=url.split(","), **options)
        try:
            return await fn(nc.jetstream())
        finally:
            await nc.close()

    return asyncio.run(go())


async def _consumer_counts(js: Any) -> dict[str, tuple[int, int]]:
    out = {}
    for stream in ("SIDECAR_JOBS", "SIDECAR_EVENTS", "SIDECAR_DLQ"):
        for info in await js.consumers_info(stream):
            out[info.name] = (int(info.num_pending), int(info.num_ack_pending))
    return out


async def _dlq_count(js: Any) -> int:
    return int((await js.stream_info("SIDECAR_DLQ")).state.messages)


def pg_ctl(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The embedded PostgreSQL's own pg_ctl on the stack's cluster (data_dir/pg)."""
    import pgserver

    binary = Path(pgserver.__file__).parent / "pginstall" / "bin" / "pg_ctl"
    # as root, pgserver runs PostgreSQL as its own unprivileged user; so must pg_ctl
    user = ["runuser", "-u", "pgserver", "--"] if os.geteuid() == 0 else []
    # -l: the server's output to its log (on our pipe, run() would wait for the server's exit)
    return subprocess.run([*user, str(binary), "-D", str(data_dir / "pg"), "-l",
                           str(data_dir / "pg" / "log"), *args],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)


@dataclass(frozen=True)
class Command:
    """How a running process was started: enough to start it again the same way."""

    argv: list[str]
    env: dict[str, str]
    cwd: str

    @classmethod
    def of(cls, pid: int) -> Command:
        proc_dir = Path("/proc") / str(pid)
        argv = [a.decode() for a in (proc_dir / "cmdline").read_bytes().split(b"\0") if a]
        env = dict(kv.decode().split("=", 1) for kv in (proc_dir / "environ").read_bytes()
                   .split(b"\0") if b"=" in kv)
        return cls(argv, env, os.readlink(proc_dir / "cwd"))

    def start(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self.argv, env=self.env, cwd=self.cwd,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_pid(pid: int, sig: int = signal.SIGKILL, timeout: float = 60) -> None:
    """Sends `sig` and waits until the process is gone (or a zombie)."""
    proc_dir = Path("/proc") / str(pid)
    os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while _alive(proc_dir) and time.monotonic() < deadline:
        time.sleep(0.05)


def _alive(proc_dir: Path) -> bool:
    try:
        return (proc_dir / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
