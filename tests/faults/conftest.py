"""The fault suite: real faults on real servers; every test is slow."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from tests.acceptance.stack import Stack, new_stack, stack_root
from tests.faults.harness import Faulty, pg_ctl
from tests.sharing import Shared, under

_is_fault_test = under("tests/faults/")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _is_fault_test(item):
            item.add_marker(pytest.mark.slow)
            item.add_marker(pytest.mark.integration)
    SHARED.group(items, _is_fault_test)  # the shared stack is up only while its modules run


@contextmanager
def running_stack(*flags: str, env: dict[str, str] | None = None) -> Iterator[Faulty]:
    """`sidecar up FLAGS` on a fresh data dir, stopped (with any server a test restarted
    outside its supervisor) afterwards, on a data dir outside pytest's own temporary root
    (`stack_root`)."""
    with stack_root("sidecar-faults-") as root:
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
            if (stack.data_dir / "pg" / "postmaster.pid").exists():
                # A PostgreSQL that a test restarted with pg_ctl is not the one the stack's
                # pgserver handle started, and so outlives `sidecar up`: stop it here.
                pg_ctl(stack.data_dir, "stop", "-m", "fast", "-w")


SHARED = Shared("shared_up", running_stack)


def pytest_collection_finish(session: pytest.Session) -> None:
    SHARED.collected(session)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    yield
    SHARED.after_test(item)


def pytest_sessionfinish(session: pytest.Session) -> None:
    SHARED.stop()


@pytest.fixture(scope="session")
def shared_up() -> Faulty:
    return SHARED.get()


@pytest.fixture(scope="module")
def up(shared_up: Faulty) -> Faulty:
    """`sidecar up` as a user starts it, shared by the modules that break it on its defaults
    (outages, worker kills): each test sends studies of its own and checks those, and a server
    that a test restarted stays the stack's server for the tests after it, as in one module."""
    return shared_up
