"""Three real nats-server processes forming one JetStream cluster on loopback ports."""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from sidecar_app.runtime.embedded import nats_binary
from tests.servers import free_port, wait_port


class NatsCluster:
    """`nats-server --cluster --routes` × 3 with JetStream; a node can be killed and restarted
    on its port and data."""

    def __init__(self, size: int = 3) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="sidecar-natscluster-"))
        self.client_ports = [free_port() for _ in range(size)]
        self.cluster_ports = [free_port() for _ in range(size)]
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * size

    @property
    def url(self) -> str:
        """What SIDECAR_NATS_URL takes: every member, comma-separated."""
        return ",".join(f"nats://127.0.0.1:{p}" for p in self.client_ports)

    def start_node(self, i: int) -> None:
        routes = ",".join(f"nats://127.0.0.1:{p}" for j, p in enumerate(self.cluster_ports)
                          if j != i)
        log = (self.root / f"n{i}.log").open("ab")
        self.procs[i] = subprocess.Popen(
            [nats_binary(), "-a", "127.0.0.1", "-p", str(self.client_ports[i]), "-n", f"n{i}",
             "-js", "-sd", str(self.root / f"n{i}"), "--cluster_name", "sidecar",
             "--cluster", f"nats://127.0.0.1:{self.cluster_ports[i]}", "--routes", routes],
            stdout=log, stderr=subprocess.STDOUT)

    def start(self) -> None:
        for i in range(len(self.procs)):
            self.start_node(i)
        for port in self.client_ports:
            wait_port(port)

    def kill_node(self, i: int) -> None:
        proc = self.procs[i]
        assert proc is not None
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        self.procs[i] = None

    def close(self) -> None:
        for proc in self.procs:
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(15)
        shutil.rmtree(self.root, ignore_errors=True)
