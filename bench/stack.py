"""`sidecar up` for the benchmarks, started the way a user starts it (no pytest needed).

Every bench that needs the running product takes it from here: `sidecar up` as a child process
on a fresh data dir in a temp folder, every port (`--NAME-port`) a free loopback one, stopped
with SIGTERM (Ctrl-C) at the end. With `--stack DATA_DIR` a bench reuses a `sidecar up` already
running on DATA_DIR (its runtime.json says the ports and the database) and leaves it running;
the smoke run (tests/bench/test_bench_smoke.py) shares one stack across the benches that way.
Each bench adds facilities and users of its own (unique names), so benches sharing a stack do
not see each other's studies.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from sidecar_core.security.mesh_tls import TLS_DIR, MeshCredentials, from_folder

ROOT = Path(__file__).resolve().parents[1]
# The installed console script when there is one (`.venv/bin/sidecar`), as a user runs it.
_SCRIPT = Path(sys.executable).parent / "sidecar"
SIDECAR = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "sidecar_app.cli"]
READY_LINE = "Sidecar is up."
ADMIN = "bench_admin"
PASSWORD = "bench horse battery staple"


_HANDED_OUT: set[int] = set()


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A loopback port free now, for a server started a little later. Chosen below the kernel's
    ephemeral range (ip_local_port_range): a port the kernel hands out itself (bind to 0) is
    also what it gives the next outbound connection, so a database or NATS client of the same
    test could take it before the server binds ("address already in use"). Never the same port
    twice in one process."""
    low = _ephemeral_low()
    if low > 12000:
        for _ in range(500):
            port = random.randint(10000, low - 1)
            if port in _HANDED_OUT:
                continue
            with socket.socket() as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    continue
            _HANDED_OUT.add(port)
            return port
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# The peers that benches and tests run (webhook receivers, a fake LLM, Orthanc as the PACS)
# listen on loopback over plain http or DICOM: listed, as an operator lists a local peer
# (docs/deployment.md, "Outbound destinations"). A stack that tests the rules themselves
# overrides it (SIDECAR_EGRESS_ALLOW="").
LOOPBACK_PEERS = "127.0.0.1"


def clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment without SIDECAR_* settings or proxies (embedded defaults), with
    the loopback peers of the benches and tests allowed as outbound destinations."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("SIDECAR_") and "proxy" not in k.lower()}
    env["SIDECAR_EGRESS_ALLOW"] = LOOPBACK_PEERS
    env.update(extra)
    return env


def unique(prefix: str) -> str:
    """A facility or user name no other bench on the same stack uses (<= 16 characters, so its
    upper-cased form is a valid AE title)."""
    return f"{prefix[:9]}_{secrets.token_hex(3)}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every bench on `sidecar up` shares: --stack and --smoke."""
    parser.add_argument("--stack", type=Path, metavar="DATA_DIR", default=None,
                        help="reuse the `sidecar up` running on DATA_DIR (its runtime.json) "
                             "instead of starting one")
    parser.add_argument("--smoke", action="store_true",
                        help="the smallest size: checks that the bench runs (make test)")


@dataclass
class Stack:
    """A running `sidecar up`: its data dir, ports, runtime.json and the admin's login."""

    data_dir: Path
    ports: dict[str, int] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None  # None: reused, someone else's
    log_path: Path | None = None
    env: dict[str, str] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['gateway']}"

    def address(self, name: str) -> str:
        return f"127.0.0.1:{self.ports[name]}"

    def credentials(self, name: str = "operator") -> MeshCredentials:
        """The mesh credentials `sidecar up` made in DATA_DIR/tls (the operator's by default)."""
        return from_folder(self.data_dir / TLS_DIR, name)

    def channel(self, service: str, options: Sequence[tuple[str, Any]] = (),
                as_: str = "operator") -> grpc.Channel:
        """A blocking mTLS channel to one gRPC service of the stack."""
        return self.credentials(as_).channel(self.address(service), options)

    def runtime(self) -> dict[str, Any]:
        """What `sidecar up` wrote to DATA_DIR/runtime.json (ports, database URL, pid)."""
        return dict(json.loads((self.data_dir / "runtime.json").read_text()))

    @property
    def pid(self) -> int:
        return int(self.runtime()["pid"])

    def cli(self, *args: str, stdin: str | None = None, check: bool = True,
            timeout: float = 180.0) -> subprocess.CompletedProcess[str]:
        """`sidecar ARGS --data-dir DATA_DIR`, an admin command against this stack."""
        done = subprocess.run([*SIDECAR, *args, "--data-dir", str(self.data_dir)], input=stdin,
                              capture_output=True, text=True, timeout=timeout,
                              env=clean_env(**self.env))
        if check and done.returncode != 0:
            raise RuntimeError(f"sidecar {' '.join(args)} failed ({done.returncode}):\n"
                               f"{done.stdout[-2000:]}{done.stderr[-2000:]}")
        return done

    def add_facility(self, prefix: str, *settings: str) -> str:
        """A new facility of this bench (AE title = its name upper-cased), with `facility set`
        SETTINGS if any; returns its name."""
        name = unique(prefix)
        self.cli("facility", "add", name, "--ae-title", name.upper())
        if settings:
            self.cli("facility", "set", name, *settings)
        return name

    def add_user(self, role: str = "admin", facility: str = "", prefix: str = "bench") -> str:
        name = unique(prefix)
        self.cli("user", "add", name, "--role", role, *(["--facility", facility] if facility
                                                         else []),
                 "--password-stdin", stdin=PASSWORD + "\n")
        return name

    def login(self, username: str, password: str = PASSWORD) -> str:
        import httpx

        reply = httpx.post(f"{self.base_url}/api/v1/auth/login", timeout=30,
                           json={"username": username, "password": password})
        reply.raise_for_status()
        return str(reply.json()["access_token"])

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def start(self, *extra: str, timeout: float = 300.0, command: str = "up") -> None:
        """`sidecar COMMAND` (up, or demo) on this data dir and ports; returns once it says it is
        up, raises with its output when it exits or times out first."""
        flags = [f"--{name}-port={port}" for name, port in self.ports.items()]
        self.log_path = self.data_dir.parent / f"sidecar-{command}.log"
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen([*SIDECAR, command, "--data-dir", str(self.data_dir),
                                          *flags, *extra], stdout=log, stderr=subprocess.STDOUT,
                                         env=clean_env(**self.env))
        deadline = time.monotonic() + timeout
        while READY_LINE not in self.output():
            if self.proc.poll() is not None:
                raise RuntimeError(f"sidecar {command} exited with {self.proc.returncode}:\n"
                                   f"{self.output()[-4000:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"sidecar {command} not ready in {timeout:.0f} s:\n"
                                   f"{self.output()[-4000:]}")
            time.sleep(0.5)

    def stop(self) -> int | None:
        """SIGTERM, as Ctrl-C would; waits for every child to be gone (only a stack this
        helper started; a reused one keeps running)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def children(self) -> dict[str, int]:
        """The service processes of this `sidecar up` (name → pid), from /proc: the module a
        child runs (`ingest_svc.main`, ...) or its program name."""
        parent = self.pid
        found: dict[str, int] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                status = (entry / "status").read_text()
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            ppid = int(next(line.split()[1] for line in status.splitlines()
                            if line.startswith("PPid:")))
            if ppid != parent:
                continue
            words = [a.decode(errors="replace") for a in argv if a]
            name = words[words.index("-m") + 1] if "-m" in words else Path(words[0]).name
            found.setdefault(name, int(entry.name))
        return found

    def stage_seconds(self, service: str, metric: str) -> dict[str, tuple[float, int]]:
        """(sum of seconds, count) per `stage` label of the histogram METRIC, as the process
        SERVICE serves it on its metrics port (`SERVICE-metrics`) now."""
        import httpx
        from prometheus_client.parser import text_string_to_metric_families

        body = httpx.get(f"http://{self.address(service + '-metrics')}/metrics",
                         timeout=10).text
        found: dict[str, tuple[float, int]] = {}
        for family in text_string_to_metric_families(body):
            if family.name != metric:
                continue
            for sample in family.samples:
                stage = sample.labels.get("stage", "")
                total, count = found.get(stage, (0.0, 0))
                if sample.name == metric + "_sum":
                    found[stage] = (sample.value, count)
                elif sample.name == metric + "_count":
                    found[stage] = (total, int(sample.value))
        return found

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds (user + system) used so far by each part of this stack: every process
        under `sidecar up` by the name `children` gives it, and the embedded PostgreSQL (its
        postmaster and every backend) as `postgres`. Two readings around a run say where its
        CPU went; a process that ended between them is missing from the second."""
        tick = os.sysconf("SC_CLK_TCK")
        table: dict[int, tuple[int, float, list[str]]] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text().rpartition(")")[2].split()
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            table[int(entry.name)] = (int(stat[1]), (int(stat[11]) + int(stat[12])) / tick,
                                      [a.decode(errors="replace") for a in argv if a])
        roots = {self.pid: ""}
        pg = self.data_dir / "pg" / "postmaster.pid"
        if pg.exists():
            roots[int(pg.read_text().split()[0])] = "postgres"
        totals: dict[str, float] = {}
        for pid, (_, cpu, _) in table.items():
            # walk up to the root's child this process descends from (or the root itself)
            cur = pid
            while cur in table and cur not in roots and table[cur][0] not in roots:
                cur = table[cur][0]
            if cur in roots:
                name = roots[cur] or "sidecar up"
            elif cur in table:
                argv, part = table[cur][2], roots[table[cur][0]]
                name = part or (argv[argv.index("-m") + 1] if "-m" in argv
                                else Path(argv[0]).name if argv else str(cur))
            else:
                continue
            totals[name] = totals.get(name, 0.0) + cpu
        return totals


def print_breakdown(label: str, n: int, cpu: tuple[dict[str, float], dict[str, float]],
                stages: tuple[dict[str, tuple[float, int]], dict[str, tuple[float, int]]]
                | None = None, wall_s: float = 0.0) -> None:
    """Where the time of N units (messages, objects) went between two readings: the mean
    milliseconds of each stage (`stage_seconds`), then each process's CPU milliseconds per
    unit (`cpu_seconds`), largest first."""
    if stages is not None:
        before, after = stages
        rows = []
        for stage, (total, count) in after.items():
            t0, c0 = before.get(stage, (0.0, 0))
            if count > c0:
                rows.append(f"{stage} {(total - t0) * 1000 / (count - c0):.2f}")
        print(f"  {label} stages, mean ms: " + ", ".join(rows))
    before_cpu, after_cpu = cpu
    used = sorted(((after_cpu[k] - before_cpu.get(k, 0.0), k) for k in after_cpu),
                  reverse=True)
    total_cpu = sum(d for d, _ in used)
    wall = f" in {wall_s * 1000 / n:.1f} ms wall" if wall_s else ""
    print(f"  {label} CPU ms per unit{wall}: total {total_cpu * 1000 / n:.2f}; "
          + ", ".join(f"{k} {d * 1000 / n:.2f}" for d, k in used if d * 1000 / n >= 0.05))


def reuse(data_dir: Path) -> Stack:
    """The `sidecar up` already running on DATA_DIR."""
    info = json.loads((data_dir / "runtime.json").read_text())
    try:
        os.kill(int(info["pid"]), 0)
    except OSError:
        raise RuntimeError(f"no sidecar up running on {data_dir} (runtime.json's pid "
                           f"{info['pid']} is gone)") from None
    return Stack(data_dir, ports={k: int(v) for k, v in info["ports"].items()})


@contextmanager
def sidecar_up(stack_dir: Path | None = None, *extra: str, env: dict[str, str] | None = None,
               keep: bool = False) -> Iterator[Stack]:
    """A running `sidecar up`: the one on STACK_DIR when given, else a new one on a fresh data
    dir in a temp folder, free loopback ports, embedded servers, stopped (and removed unless
    KEEP) on exit. EXTRA (e.g. `--replicas=2`) and ENV only apply to a new stack."""
    if stack_dir is not None:
        if extra or env:
            print(f"note: --stack given; {' '.join(extra)} {env or ''} not applied",
                  file=sys.stderr)
        yield reuse(stack_dir)
        return
    from sidecar_app.runtime.supervisor import DEFAULT_PORTS

    root = Path(tempfile.mkdtemp(prefix="sidecar-bench-"))
    stack = Stack(root / "data", ports={name: free_port() for name in DEFAULT_PORTS},
                  env=dict(env or {}))
    try:
        t0 = time.perf_counter()
        stack.start(*extra)
        print(f"sidecar up ready in {time.perf_counter() - t0:.1f} s "
              f"(data dir {stack.data_dir})", flush=True)
        yield stack
    finally:
        stack.stop()
        if keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    """`python -m bench.stack DATA_DIR`: starts `sidecar up` on DATA_DIR (free ports) for
    benches run with `--stack DATA_DIR`, until Ctrl-C or SIGTERM."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("data_dir", type=Path)
    args = parser.parse_args(argv)
    from sidecar_app.runtime.supervisor import DEFAULT_PORTS

    stack = Stack(args.data_dir, ports={name: free_port() for name in DEFAULT_PORTS})
    args.data_dir.mkdir(parents=True, exist_ok=True)
    # SIGTERM as Ctrl-C: a background job of a script ignores SIGINT
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        stack.start()
        print(f"sidecar up running on {args.data_dir}; Ctrl-C (or SIGTERM) stops it",
              flush=True)
        stack.proc.wait()  # type: ignore[union-attr]
    except KeyboardInterrupt:
        pass
    finally:
        stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
