"""MLLP framing over TCP (HL7 v2 minimal lower layer protocol): <VT> message <FS><CR>."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)
START, END = b"\x0b", b"\x1c\x0d"
MessageHandler = Callable[[bytes, str], Awaitable[list[bytes]]]


def frame(message: bytes) -> bytes:
    return START + message + END


class MllpServer:
    """Reads framed messages from any number of connections, one message at a time per
    connection, and writes back what the handler answers. A message may arrive in any number
    of TCP reads; bytes outside a frame are dropped (logged)."""

    def __init__(self, handler: MessageHandler, host: str = "127.0.0.1", port: int = 2575,
                 max_message_bytes: int = 16 * 1024 * 1024) -> None:
        self.handler = handler
        self.host = host
        self.port = port
        self.max_message_bytes = max_message_bytes
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("MLLP listening on %s:%d", self.host, self.port)
        return self.port

    async def stop(self) -> None:
        """Stops accepting, lets each connection finish the message it is handling."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        if self._connections:  # a message being handled is answered first
            await asyncio.wait(list(self._connections), timeout=5)
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peername = writer.get_extra_info("peername")
        peer = f"{peername[0]}:{peername[1]}" if peername else ""
        buf = bytearray()
        try:
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                buf += chunk
                while True:
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
                    end = buf.find(END, 1)
                    if end < 0:
                        if len(buf) > self.max_message_bytes:
                            log.warning("MLLP message from %s over %d bytes: closing", peer,
                                        self.max_message_bytes)
                            return
                        break
                    message = bytes(buf[1:end])
                    del buf[:end + len(END)]
                    for ack in await self.handler(message, peer):
                        writer.write(frame(ack))
                    await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            log.info("MLLP connection from %s closed by the peer", peer)
        finally:
            if task is not None:
                self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
