"""MLLP framing over TCP or TLS (HL7 v2 minimal lower layer protocol): <VT> message <FS><CR>,
with the listener's bounds: a connection cap, an idle timeout and a message size limit."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from sidecar_core.observability import metrics

log = logging.getLogger(__name__)
START, END = b"\x0b", b"\x1c\x0d"
MessageHandler = Callable[[bytes, str], Awaitable[list[bytes]]]
# (the first bytes of a message over the size limit, its size so far, the peer) → the ACKs
OversizeHandler = Callable[[bytes, int, str], Awaitable[list[bytes]]]
HEAD_KEPT = 4096  # of a message over the limit: enough for its MSH segment, for the ACK


def frame(message: bytes) -> bytes:
    return START + message + END


def client_name(writer: asyncio.StreamWriter) -> str:
    """`CN=name` of the client certificate verified on a TLS connection ("" without one): the
    sender as the messages it sends record it."""
    cert = writer.get_extra_info("peercert") or {}
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return f"CN={value}"
    return ""


@dataclass(frozen=True)
class MllpLimits:
    """The bounds of one listener (both of its ports together)."""

    max_message_bytes: int = 1024 * 1024
    max_connections: int = 64
    idle_timeout: float = 60.0  # no byte for this long, or a message or handshake not done in it


@dataclass
class RefusalBurst:
    """Connections turned away (over the cap), evicted (the longest idle one, for a new one) or
    whose TLS handshake failed (plaintext, no or a wrong client certificate, too slow) within
    one window: reported once per burst, not once per connection."""

    refused: int = 0
    evicted: int = 0
    tls_failed: int = 0
    tls_errors: list[str] = field(default_factory=list)  # the distinct reasons (5 at most)
    peers: set[str] = field(default_factory=set)
    started: float = field(default_factory=time.time)


BurstReporter = Callable[[RefusalBurst], Awaitable[None]]


@dataclass(eq=False)
class _Connection:
    writer: asyncio.StreamWriter
    peer: str
    task: asyncio.Task[None] | None
    last_active: float = field(default_factory=time.monotonic)
    busy: bool = False  # a partial message is buffered or a message is being handled


class MllpServer:
    """Reads framed messages from its connections, one message at a time per connection, and
    writes back what the handler answers. A message may arrive in any number of reads; bytes
    outside a frame are dropped (logged).

    Listens on `port` (plain TCP) and, with a `tls` context, on `tls_port` too. At most
    `limits.max_connections` connections are open on both ports together: a new connection
    beyond that takes the place of the connection idle longest (nothing buffered, nothing being
    handled), or is closed at once when every connection is busy. A connection is closed after
    `limits.idle_timeout` seconds without a byte, when a message or a TLS handshake it began is
    not complete within that time, or at once when it is not TLS on the TLS port. A message over
    `limits.max_message_bytes` is read past, not buffered, and answered by `oversize`."""

    def __init__(self, handler: MessageHandler, host: str = "127.0.0.1", port: int = 2575,
                 max_message_bytes: int = 1024 * 1024, *, limits: MllpLimits | None = None,
                 tls: ssl.SSLContext | None = None, tls_port: int = 2576,
                 oversize: OversizeHandler | None = None, on_burst: BurstReporter | None = None,
                 burst_window: float = 10.0) -> None:
        self.handler = handler
        self.host = host
        self.port = port
        self.limits = limits or MllpLimits(max_message_bytes=max_message_bytes)
        self.max_message_bytes = self.limits.max_message_bytes
        self.tls = tls
        self.tls_port = tls_port
        self.oversize = oversize
        self.on_burst = on_burst
        self.burst_window = burst_window
        self._servers: list[asyncio.Server] = []
        self._connections: dict[asyncio.StreamWriter, _Connection] = {}
        self._burst: RefusalBurst | None = None
        self._reporter: asyncio.Task[None] | None = None

    @property
    def open_connections(self) -> int:
        return len(self._connections)

    async def start(self) -> int:
        """Listens; returns the plain port (the TLS one is `tls_port` after this)."""
        plain = await asyncio.start_server(self._plain, self.host, self.port, backlog=512)
        self._servers.append(plain)
        self.port = plain.sockets[0].getsockname()[1]
        log.info("MLLP listening on %s:%d", self.host, self.port)
        if self.tls is not None:
            secure = await asyncio.start_server(self._secure, self.host, self.tls_port,
                                                backlog=512)
            self._servers.append(secure)
            self.tls_port = secure.sockets[0].getsockname()[1]
            log.info("MLLP over TLS listening on %s:%d", self.host, self.tls_port)
        return self.port

    async def stop(self) -> None:
        """Stops accepting, lets each connection finish the message it is handling."""
        for server in self._servers:
            server.close()
        for server in self._servers:
            await server.wait_closed()
        tasks = [c.task for c in self._connections.values() if c.task is not None]
        if tasks:  # a message being handled is answered first
            await asyncio.wait(tasks, timeout=5)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._reporter is not None:
            self._reporter.cancel()
            await asyncio.gather(self._reporter, return_exceptions=True)
        await self._report()

    async def _plain(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._serve(reader, writer, secure=False)

    async def _secure(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._serve(reader, writer, secure=True)

    def _admit(self, writer: asyncio.StreamWriter, peer: str) -> _Connection | None:
        """The new connection's record, or None when it is turned away (over the cap)."""
        if len(self._connections) >= self.limits.max_connections:
            idle = [c for c in self._connections.values() if not c.busy]
            if not idle:
                metrics.HL7_REFUSALS.labels("over_cap").inc()
                self._tally(peer, "refused")
                return None
            oldest = min(idle, key=lambda c: c.last_active)
            log.debug("MLLP connection from %s closed (idle) to admit %s: %d connections open",
                      oldest.peer, peer, len(self._connections))
            metrics.HL7_REFUSALS.labels("evicted").inc()
            self._tally(oldest.peer, "evicted")
            self._drop(oldest)
        conn = _Connection(writer, peer, asyncio.current_task())
        self._connections[writer] = conn
        metrics.HL7_CONNECTIONS.set(len(self._connections))
        return conn

    def _drop(self, conn: _Connection) -> None:
        self._connections.pop(conn.writer, None)
        metrics.HL7_CONNECTIONS.set(len(self._connections))
        conn.writer.transport.abort()
        if conn.task is not None and conn.task is not asyncio.current_task():
            conn.task.cancel()

    def _tally(self, peer: str, kind: str, error: str = "") -> None:
        if self._burst is None:
            self._burst = RefusalBurst()
            if self.on_burst is not None:
                self._reporter = asyncio.get_running_loop().create_task(self._report_later())
        if kind != "tls_failed" and not (self._burst.refused or self._burst.evicted):
            log.warning("MLLP connection cap (%d) reached: closing idle connections for new "
                        "ones, or turning new ones away", self.limits.max_connections)
        setattr(self._burst, kind, getattr(self._burst, kind) + 1)
        if error and error not in self._burst.tls_errors and len(self._burst.tls_errors) < 5:
            self._burst.tls_errors.append(error)
        if len(self._burst.peers) < 20:
            self._burst.peers.add(peer.rsplit(":", 1)[0])

    async def _report_later(self) -> None:
        await asyncio.sleep(self.burst_window)
        await self._report()

    async def _report(self) -> None:
        burst, self._burst = self._burst, None
        if burst is None:
            return
        log.warning("MLLP connection cap (%d): %d connections turned away, %d idle ones closed "
                    "for new ones; %d TLS handshakes failed; from %s",
                    self.limits.max_connections, burst.refused, burst.evicted, burst.tls_failed,
                    ", ".join(sorted(burst.peers)))
        if self.on_burst is not None:
            try:
                await self.on_burst(burst)
            except Exception:
                log.exception("MLLP connection-cap report failed")

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     secure: bool) -> None:
        peername = writer.get_extra_info("peername")
        peer = f"{peername[0]}:{peername[1]}" if peername else ""
        conn = self._admit(writer, peer)
        if conn is None:
            writer.transport.abort()
            return
        try:
            sock = writer.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if secure:
                if not await self._handshake(writer, peer):
                    return
                conn.peer = f"{peer} {client_name(writer)}".strip()
            await self._messages(reader, writer, conn)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            log.info("MLLP connection from %s closed by the peer", peer)
        except asyncio.CancelledError:
            if self._connections.get(writer) is conn:
                raise  # stopping; an evicted connection's task just ends
        finally:
            if self._connections.get(writer) is conn:
                self._connections.pop(writer, None)
                metrics.HL7_CONNECTIONS.set(len(self._connections))
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 5)

    async def _handshake(self, writer: asyncio.StreamWriter, peer: str) -> bool:
        assert self.tls is not None
        try:
            await writer.start_tls(self.tls, ssl_handshake_timeout=self.limits.idle_timeout)
        except (ssl.SSLError, ConnectionError, TimeoutError, OSError) as exc:
            metrics.HL7_REFUSALS.labels("tls_handshake").inc()
            reason = " ".join(str(exc).split()) or type(exc).__name__
            log.warning("MLLP/TLS handshake with %s failed: %s", peer, reason)
            self._tally(peer, "tls_failed", reason[:200])
            writer.transport.abort()
            return False
        return True

    async def _messages(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                        conn: _Connection) -> None:
        peer, limit, idle = conn.peer, self.limits.max_message_bytes, self.limits.idle_timeout
        buf = bytearray()
        deadline = 0.0  # when the message begun must be complete (0: none begun)
        head = b""  # of a message over the limit, being read past
        skipped = 0
        while True:
            now = time.monotonic()
            wait = idle if not deadline else max(0.0, deadline - now)
            try:
                chunk = await asyncio.wait_for(reader.read(65536), wait)
            except TimeoutError:
                what = "a message begun" if deadline else "no data"
                log.info("MLLP connection from %s closed: %s for %.0f s", peer, what, idle)
                metrics.HL7_REFUSALS.labels("idle_timeout").inc()
                return
            if not chunk:
                if buf.strip() or skipped:
                    log.warning("MLLP connection from %s closed inside a message", peer)
                return
            conn.last_active = time.monotonic()
            buf += chunk
            while True:
                if skipped:  # reading past a message over the limit
                    end = buf.find(END)
                    if end < 0:
                        skipped += max(0, len(buf) - 1)
                        del buf[:-1]
                        break
                    skipped += end
                    del buf[:end + len(END)]
                    await self._answer_oversize(writer, head, skipped, peer)
                    head, skipped, deadline = b"", 0, 0.0
                    continue
                start = buf.find(START)
                if start < 0:
                    if buf.strip():
                        log.warning("dropped %d bytes outside an MLLP frame from %s",
                                    len(buf), peer)
                    buf.clear()
                    break
                if start > 0:
                    log.warning("dropped %d bytes before an MLLP frame from %s", start, peer)
                    del buf[:start]
                if not deadline:
                    deadline = time.monotonic() + idle
                end = buf.find(END, 1)
                if end < 0:
                    if len(buf) - 1 > limit:
                        head = bytes(buf[1:1 + HEAD_KEPT])
                        skipped = len(buf) - 2
                        del buf[:-1]
                        log.warning("MLLP message from %s over %d bytes: reading past it",
                                    peer, limit)
                        continue
                    break
                if end - 1 > limit:
                    head, skipped = bytes(buf[1:1 + HEAD_KEPT]), end - 1
                    del buf[:end + len(END)]
                    await self._answer_oversize(writer, head, skipped, peer)
                    head, skipped, deadline = b"", 0, 0.0
                    continue
                message = bytes(buf[1:end])
                del buf[:end + len(END)]
                conn.busy = True
                try:
                    for ack in await self.handler(message, peer):
                        writer.write(frame(ack))
                    await writer.drain()
                finally:
                    conn.busy = False
                    conn.last_active = time.monotonic()
                deadline = 0.0
            conn.busy = bool(buf.strip(b"\r\n \t")) or bool(skipped)

    async def _answer_oversize(self, writer: asyncio.StreamWriter, head: bytes, size: int,
                               peer: str) -> None:
        metrics.HL7_REFUSALS.labels("message_too_large").inc()
        log.warning("MLLP message of %d bytes from %s refused (limit %d)", size, peer,
                    self.max_message_bytes)
        if self.oversize is None:
            return
        for ack in await self.oversize(head, size, peer):
            writer.write(frame(ack))
        await writer.drain()
