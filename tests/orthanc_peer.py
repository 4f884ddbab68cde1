"""A real Orthanc (Debian package) as the hospital PACS, in a loopback-only network namespace,
reached from the test's namespace through unix-socket bridges (Orthanc listens on all
addresses, so it gets a network namespace of its own)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.ns_bridge import splice
from tests.servers import free_port

ORTHANC = "/usr/sbin/Orthanc"
NODELAY = {"TCP_NODELAY": "1"}


def available() -> bool:
    return (Path(ORTHANC).exists() and shutil.which("unshare") is not None
            and os.geteuid() == 0)


@dataclass
class OrthancPeer:
    """`dicom_port` and `http_port` are loopback ports of this namespace."""

    work: Path
    aet: str = "ORTHANC"
    dicom_port: int = 0
    http_port: int = 0
    config: dict[str, object] = field(default_factory=dict)  # more Orthanc settings (DICOM TLS)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    servers: list[asyncio.Server] = field(default_factory=list)

    @property
    def netns(self) -> Path:
        return self.work / "netns"

    def _ns(self, *cmd: str) -> list[str]:
        return ["nsenter", f"--net={self.netns}", *cmd]

    def _launch(self) -> list[str]:
        """Namespace, Orthanc and one bridge per port inside it; returns the socket paths."""
        self.work.mkdir(parents=True, exist_ok=True)
        self.netns.touch()
        subprocess.run(["unshare", f"--net={self.netns}", "true"], check=True)
        subprocess.run(self._ns("ip", "link", "set", "lo", "up"), check=True)
        storage = self.work / "orthanc"
        storage.mkdir()
        cfg = {"Name": "pacs", "StorageDirectory": str(storage), "IndexDirectory": str(storage),
               "DicomAet": self.aet, "DicomPort": 4242, "HttpPort": 8042,
               "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
               "DicomCheckCalledAet": True, "Plugins": [], **self.config}
        (self.work / "orthanc.json").write_text(json.dumps(cfg))
        self.procs.append(subprocess.Popen(
            self._ns(ORTHANC, str(self.work / "orthanc.json")), env={**os.environ, **NODELAY},
            stdout=subprocess.DEVNULL, stderr=(self.work / "orthanc.log").open("wb")))
        socks = []
        for name, inner in (("dicom", 4242), ("http", 8042)):
            sock = str(self.work / f"{name}.sock")
            self.procs.append(subprocess.Popen(self._ns(
                sys.executable, "-m", "tests.ns_bridge", sock, "127.0.0.1", str(inner))))
            socks.append(sock)
        return socks

    def _terminate(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        if self.netns.exists():
            subprocess.run(["umount", str(self.netns)], check=False)

    async def start(self) -> None:
        socks = self._launch()
        for name, sock in zip(("dicom", "http"), socks, strict=True):
            port = free_port()
            self.servers.append(await asyncio.start_server(
                lambda r, w, s=sock: _to_unix(r, w, s), "127.0.0.1", port))
            setattr(self, f"{name}_port", port)
        deadline = time.monotonic() + 30
        while not await self._http_ready():
            if time.monotonic() > deadline or self.procs[0].poll() is not None:
                raise RuntimeError("Orthanc did not start: "
                                   + (self.work / "orthanc.log").read_text()[-2000:])
            await asyncio.sleep(0.3)

    async def reach_back(self, inner_port: int, host_port: int) -> None:
        """Lets Orthanc connect to `host_port` of this namespace as 127.0.0.1:`inner_port` of
        its own (a C-MOVE destination listed in its DicomModalities)."""
        sock = str(self.work / f"back-{inner_port}.sock")

        async def to_host(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", host_port)
            except OSError:
                writer.close()
                return
            await splice(reader, writer, up_reader, up_writer)

        self.servers.append(await asyncio.start_unix_server(to_host, sock))
        self._spawn(self._ns(sys.executable, "-m", "tests.ns_bridge", "--listen", "127.0.0.1",
                             str(inner_port), sock))

    def _spawn(self, cmd: list[str]) -> None:
        self.procs.append(subprocess.Popen(cmd))

    async def upload(self, files: list[bytes]) -> None:
        """Stores DICOM files in Orthanc through its REST API (as a modality would have)."""
        import httpx

        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.http_port}",
                                     trust_env=False, timeout=30) as http:
            for data in files:
                (await http.post("/instances", content=data)).raise_for_status()

    async def _http_ready(self) -> bool:
        import httpx

        try:
            async with httpx.AsyncClient(trust_env=False) as http:
                return (await http.get(f"http://127.0.0.1:{self.http_port}/system",
                                       timeout=2)).status_code == 200
        except httpx.HTTPError:
            return False

    async def instance_files(self) -> list[bytes]:
        """Every instance Orthanc stored, as the DICOM files it serves back."""
        import httpx

        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.http_port}",
                                     trust_env=False, timeout=30) as http:
            ids = (await http.get("/instances")).json()
            return [(await http.get(f"/instances/{i}/file")).content for i in ids]

    async def close(self) -> None:
        for server in self.servers:
            server.close()
        self._terminate()


async def _to_unix(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                   sock: str) -> None:
    try:
        up_reader, up_writer = await asyncio.open_unix_connection(sock)
    except OSError:
        writer.close()
        return
    await splice(reader, writer, up_reader, up_writer)


@contextlib.asynccontextmanager
async def orthanc(work: Path, aet: str = "ORTHANC", **config: object
                  ) -> AsyncIterator[OrthancPeer]:
    """A running Orthanc; `config` adds to its configuration (e.g. DicomTlsEnabled)."""
    peer = OrthancPeer(work, aet=aet, config=dict(config))
    try:
        await peer.start()
        yield peer
    finally:
        await peer.close()


@contextlib.contextmanager
def orthanc_in_thread(work: Path, aet: str = "ORTHANC", back: tuple[int, int] | None = None,
                      files: list[bytes] | None = None, **config: object
                      ) -> Iterator[tuple[OrthancPeer, Callable[[], list[bytes]]]]:
    """For synchronous tests: the peer's bridges run on an event loop in a thread; yields the
    peer and a function returning what Orthanc stored. `back` (inner port, host port): see
    `reach_back`; `files` are stored in it first."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    peer = OrthancPeer(work, aet=aet, config=dict(config))
    try:
        asyncio.run_coroutine_threadsafe(peer.start(), loop).result(60)
        if back:
            asyncio.run_coroutine_threadsafe(peer.reach_back(*back), loop).result(30)
        if files:
            asyncio.run_coroutine_threadsafe(peer.upload(files), loop).result(60)
        yield peer, lambda: asyncio.run_coroutine_threadsafe(peer.instance_files(),
                                                              loop).result(60)
    finally:
        asyncio.run_coroutine_threadsafe(peer.close(), loop).result(60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
