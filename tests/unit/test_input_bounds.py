"""The gateway's input bounds as units: the streaming multipart reader of STOW-RS (same parts
however the body is cut into chunks, a part over the limit kept only as its head, malformed
bodies refused), the spool files, the JSON body limit middleware, the password hash gate and
the login back-off."""

from __future__ import annotations

import asyncio
import io
import os
import random
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from review_gateway.dicomweb import stow
from review_gateway.dicomweb.router import StowLimits
from review_gateway.web.limits import BodyLimitMiddleware
from tests.helpers import ct_slice, to_bytes
from workflow_svc.identity import passwords
from workflow_svc.identity.sessions import LoginLimits


def body(parts: list[bytes], boundary: bytes = b"bnd", preamble: bytes = b"") -> bytes:
    return preamble + b"".join(b"\r\n--" + boundary + b"\r\nContent-Type: application/dicom"
                               b"\r\n\r\n" + p for p in parts) + b"\r\n--" + boundary + b"--\r\n"


def read(data: bytes, chunks: list[int], max_part: int = 10**9) -> list[stow.SpooledPart]:
    reader = stow.MultipartReader(b"bnd", io.BytesIO, max_part, dicom_only=True)
    pos = 0
    for size in chunks:
        reader.feed(data[pos:pos + size])
        pos += size
    reader.feed(data[pos:])
    reader.finish()
    return reader.completed


def test_the_parts_do_not_depend_on_how_the_body_is_cut() -> None:
    rng = random.Random(7)
    parts = [b"one", b"", b"\r\n--bn", b"two\r\n\r\n", os.urandom(300_000), b"--bnd" * 50]
    data = body(parts, preamble=b"ignored preamble")
    for _ in range(30):
        cuts = [rng.choice((1, 2, 3, 7, 64, 4096, 65536)) for _ in range(200)]
        assert [p.read() for p in read(data, cuts)] == parts
    assert stow.split_request('multipart/related; type="application/dicom"; boundary=bnd',
                              data) == parts


def test_a_part_over_the_limit_keeps_only_its_head_and_the_next_part_is_read() -> None:
    dicom = to_bytes(ct_slice(rows=512, cols=512))  # half a MiB
    parts = read(body([dicom, b"small"]), [1000] * 600, max_part=100_000)
    big, small = parts
    assert big.too_large and big.size == len(dicom)
    head = big.read()
    assert len(head) == stow.MultipartReader.IDENTIFY_BYTES and dicom.startswith(head)
    assert stow.identify(big.file).sop_instance_uid  # identified from the head alone
    assert not small.too_large and small.read() == b"small"


@pytest.mark.parametrize(("data", "status", "words"), [
    (b"--bnd\r\nContent-Type: application/dicom\r\n\r\nno end", 400, "no closing boundary"),
    (b"x" * 100_000, 400, "does not occur"),
    (b"--bnd\r\nContent-Type: text/plain\r\n\r\nA\r\n--bnd--", 415, "text/plain"),
    (b"--bnd\r\n" + b"X-A: b\r\n" * 3000, 400, "no header/body separator"),
    (b"--bnd junk\r\n\r\nA\r\n--bnd--", 400, "delimiter line"),
])
def test_malformed_bodies_are_refused(data: bytes, status: int, words: str) -> None:
    with pytest.raises(stow.StowError) as refused:
        read(data, [10] * 20)
    assert refused.value.status == status and words in refused.value.message


def test_spools_go_to_disk_past_a_small_size_and_leave_no_file_behind(tmp_path: Path) -> None:
    limits = StowLimits(spool_dir=tmp_path / "stow", in_memory_bytes=1024)
    spool = limits.new_file()
    spool.write(b"x" * 4096)  # rolled over to an unnamed file in the spool folder
    assert spool._rolled  # type: ignore[attr-defined]
    assert list((tmp_path / "stow").iterdir()) == []
    name = os.readlink(f"/proc/self/fd/{spool.fileno()}")
    assert name.startswith(str(tmp_path / "stow"))
    spool.close()
    assert oct((tmp_path / "stow").stat().st_mode & 0o777) == "0o700"


async def _call(app: Any, messages: list[dict[str, Any]], path: str = "/api/v1/x",
                headers: list[tuple[bytes, bytes]] | None = None) -> tuple[int, bytes, bool]:
    sent: list[dict[str, Any]] = []
    queue = list(messages)

    async def receive() -> dict[str, Any]:
        return queue.pop(0) if queue else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": path, "headers": headers or [],
             "client": ("127.0.0.1", 1)}
    await app(scope, receive, send)
    close = (b"connection", b"close") in sent[0].get("headers", [])
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:]), close


async def test_the_body_limit_reads_no_further_than_it_and_hands_smaller_bodies_over() -> None:
    seen: list[bytes] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        message = await receive()
        seen.append(message["body"])
        while message["more_body"]:  # the middleware hands a bounded body over in one piece
            message = await receive()
            seen.append(message["body"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    limited = BodyLimitMiddleware(app, max_bytes=100, exempt=lambda s: s["path"] == "/stow")
    chunk = {"type": "http.request", "body": b"x" * 40, "more_body": True}
    last = {"type": "http.request", "body": b"y" * 10, "more_body": False}
    assert await _call(limited, [chunk, chunk, last]) == (200, b"ok", False)
    assert seen == [b"x" * 80 + b"y" * 10]
    # Over it, chunked: 413 once the 101st byte arrives (the rest, small, is drained first).
    status, answer, close = await _call(limited, [chunk, chunk, chunk, last])
    assert status == 413 and b"REQUEST_TOO_LARGE" in answer and not close
    # A declared length far beyond it: refused unread, and the connection is closed.
    status, _, close = await _call(limited, [], headers=[(b"content-length", b"999999999")])
    assert status == 413 and close
    # A route that streams its body itself is left alone.
    seen.clear()
    assert (await _call(limited, [chunk, chunk, chunk, last], path="/stow"))[0] == 200
    assert seen == [b"x" * 40] * 3 + [b"y" * 10]


async def test_password_hashes_run_at_most_n_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    running, peak = [0], [0]
    lock = threading.Lock()

    def slow_verify(password: str, stored: str) -> bool:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.05)
        with lock:
            running[0] -= 1
        return False

    monkeypatch.setattr(passwords, "verify_password", slow_verify)
    passwords.set_concurrency(2)
    try:
        assert not any(await asyncio.gather(*(passwords.verify_password_async("p", "h")
                                              for _ in range(12))))
        assert peak[0] == 2
    finally:
        passwords.set_concurrency(2)


def test_login_back_off_doubles_after_the_free_failures_up_to_its_cap() -> None:
    limits = LoginLimits(per_user=5, backoff_s=1.0, backoff_max_s=60.0)
    assert [limits.delay(n, 5) for n in (0, 4, 5, 6, 7, 10, 11, 1000)] == [
        0, 0, 1, 2, 4, 32, 60, 60]
