"""The fault suite: real faults on real servers; every test is slow."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.acceptance.stack import Stack, new_stack
from tests.faults.harness import Faulty


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/faults/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.slow)
            item.add_marker(pytest.mark.integration)


@contextmanager
def running_stack(*flags: str, env: dict[str, str] | None = None) -> Iterator[Faulty]:
    """`sidecar up FLAGS` on a fresh data dir, stopped (with any server a test restarted
    outside its supervisor) afterwards. The data dir is outside pytest's own temporary root:
    another pytest session on the machine resets that root to 0700, which locks out the
    embedded PostgreSQL's unprivileged user."""
    root = Path(tempfile.mkdtemp(prefix="sidecar-faults-"))
    try:
        stack: Stack = new_stack(root)
        stack.env = dict(env or {})
        stack.start(*flags)
        faulty = Faulty(stack)
        try:
            yield faulty
        finally:
            stack.stop()
            for server in faulty.adopted:
                server.terminate()
                server.wait(30)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def up() -> Iterator[Faulty]:
    """One `sidecar up` per module, as a user starts it."""
    with running_stack() as faulty:
        yield faulty
