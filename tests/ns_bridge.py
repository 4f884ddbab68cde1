"""Forwards connections on a unix socket to a TCP port (run inside a network namespace)."""

from __future__ import annotations

import asyncio
import contextlib
import sys


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def splice(a_reader: asyncio.StreamReader, a_writer: asyncio.StreamWriter,
                 b_reader: asyncio.StreamReader, b_writer: asyncio.StreamWriter) -> None:
    await asyncio.gather(pipe(a_reader, b_writer), pipe(b_reader, a_writer))


async def unix_to_tcp(socket_path: str, host: str, port: int) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(host, port)
        except OSError:
            writer.close()
            return
        await splice(reader, writer, up_reader, up_writer)

    server = await asyncio.start_unix_server(handle, socket_path)
    async with server:
        await server.serve_forever()


async def tcp_to_unix(host: str, port: int, socket_path: str) -> None:
    """The other way: a TCP port (inside the namespace) forwarded to a unix socket outside."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_unix_connection(socket_path)
        except OSError:
            writer.close()
            return
        await splice(reader, writer, up_reader, up_writer)

    server = await asyncio.start_server(handle, host, port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    if sys.argv[1] == "--listen":  # --listen HOST PORT SOCKET
        asyncio.run(tcp_to_unix(sys.argv[2], int(sys.argv[3]), sys.argv[4]))
    else:
        asyncio.run(unix_to_tcp(sys.argv[1], sys.argv[2], int(sys.argv[3])))
