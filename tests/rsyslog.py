"""A real rsyslog (Debian's rsyslogd) as the hospital's audit repository: a private config,
work and pid files of its own, listening on 127.0.0.1 only (TCP, or TLS through gtls), writing
each received message's raw text as one line of a file. The system's rsyslog is not touched."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.servers import free_port

RSYSLOGD = "/usr/sbin/rsyslogd"


@dataclass
class Repository:
    port: int
    out: Path

    def lines(self) -> list[bytes]:
        return self.out.read_bytes().splitlines() if self.out.exists() else []


@contextlib.contextmanager
def rsyslog(folder: Path, port: int | None = None, tls: tuple[Path, Path, Path] | None = None,
            out: Path | None = None, udp: bool = False) -> Iterator[Repository]:
    """Runs rsyslogd in the foreground until the block ends; `tls`: (CA, certificate, key);
    `udp`: a UDP input (RFC 5426) instead of TCP."""
    port = port or free_port()
    folder.mkdir(parents=True, exist_ok=True)
    work = folder / f"work-{port}"
    work.mkdir(exist_ok=True)
    out = out or folder / "received.log"
    if tls:
        ca, cert, key = tls
        head = (f'global(workDirectory="{work}" maxMessageSize="64k"\n'
                f'  DefaultNetstreamDriver="gtls" DefaultNetstreamDriverCAFile="{ca}"\n'
                f'  DefaultNetstreamDriverCertFile="{cert}" '
                f'DefaultNetstreamDriverKeyFile="{key}")\n'
                'module(load="imtcp" StreamDriver.Name="gtls" StreamDriver.Mode="1" '
                'StreamDriver.AuthMode="anon")\n')
    else:
        head = (f'global(workDirectory="{work}" maxMessageSize="64k")\n'
                + ('module(load="imudp")\n' if udp else 'module(load="imtcp")\n'))
    conf = folder / f"rsyslog-{port}.conf"
    conf.write_text(
        head
        + f'input(type="{"imudp" if udp else "imtcp"}" address="127.0.0.1" port="{port}")\n'
        + 'template(name="raw" type="string" string="%rawmsg%\\n")\n'
        + f'action(type="omfile" file="{out}" template="raw")\n')
    pid = folder / f"rsyslog-{port}.pid"
    log = (folder / f"rsyslog-{port}.stderr").open("wb")
    proc = subprocess.Popen([RSYSLOGD, "-n", "-f", str(conf), "-i", str(pid)],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            if proc.poll() is not None:
                raise RuntimeError("rsyslogd exited: "
                                   + (folder / f"rsyslog-{port}.stderr").read_text())
            if udp and _udp_bound(port):
                break
            with contextlib.suppress(OSError):
                if not udp:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("rsyslogd did not listen")
            time.sleep(0.1)
        yield Repository(port, out)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _udp_bound(port: int) -> bool:
    """Whether a UDP socket is bound to 127.0.0.1:port (/proc/net/udp)."""
    needle = f"0100007F:{port:04X}"
    return any(line.split()[1] == needle
               for line in Path("/proc/net/udp").read_text().splitlines()[1:])
