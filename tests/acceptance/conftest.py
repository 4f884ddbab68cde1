"""One `sidecar up` shared by the acceptance modules that use it on its defaults, each module on
two facilities of its own; a module that needs its own settings or stops the stack starts its own.

Starting and stopping a stack takes 20-30 s on two cores; most modules only read and write
their own facilities' studies, users and settings, which another module cannot see. Two things
are shared and must stay unique per module: user names, and synthetic study seeds (`sidecar
synth` derives the UIDs and the accession number from the seed, whatever the kind)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.acceptance.stack import Stack, new_stack, site_on, stack_root

SHARED = "shared_stack"  # the session fixture; a test that uses it has it in its fixturenames


def _is_acceptance(item: pytest.Item) -> bool:
    return "tests/acceptance/" in str(item.fspath).replace("\\", "/")


def _uses_shared(item: pytest.Item) -> bool:
    return SHARED in getattr(item, "fixturenames", ())


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _is_acceptance(item):
            item.add_marker(pytest.mark.acceptance)
            item.add_marker(pytest.mark.slow)
    # The modules on the shared stack run one after another, after the other acceptance
    # modules, so that the shared stack is up only while they run (see pytest_runtest_teardown).
    # Modules are moved whole; the order inside a module does not change.
    positions = [i for i, item in enumerate(items) if _is_acceptance(item)]
    if not positions:
        return
    block = [items[i] for i in positions]
    sharing = {item.fspath for item in block if _uses_shared(item)}
    ordered = ([item for item in block if item.fspath not in sharing]
               + [item for item in block if item.fspath in sharing])
    for i, item in zip(positions, ordered, strict=True):
        items[i] = item


class _SharedStack:
    """The shared `sidecar up`, started on first use and stopped after its last test."""

    def __init__(self) -> None:
        self.stack: Stack | None = None
        self._resources = ExitStack()
        self.last_user: str | None = None  # node id of the last test that uses it

    def start(self) -> Stack:
        if self.stack is None:
            root: Path = self._resources.enter_context(stack_root())
            running = new_stack(root, facilities=())  # each module adds its own
            self._resources.callback(running.stop)
            running.start()
            self.stack = running
        return self.stack

    def stop(self) -> None:
        self.stack = None
        self._resources.close()  # SIGTERM, wait for every child, then remove the data dir


_SHARED_STACK = _SharedStack()


def pytest_collection_finish(session: pytest.Session) -> None:
    users = [item.nodeid for item in session.items if _uses_shared(item)]
    _SHARED_STACK.last_user = users[-1] if users else None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    yield
    if item.nodeid == _SHARED_STACK.last_user:
        _SHARED_STACK.stop()  # not at the session's end: the rest of the suite needs the CPUs


def pytest_sessionfinish(session: pytest.Session) -> None:
    _SHARED_STACK.stop()  # after an interrupted run too


@pytest.fixture(scope="session")
def shared_stack() -> Iterator[Stack]:
    try:
        yield _SHARED_STACK.start()
    finally:
        _SHARED_STACK.stop()


@pytest.fixture(scope="module")
def stack(shared_stack: Stack, request: pytest.FixtureRequest) -> Stack:
    """The shared stack as this module sees it: `stack.north` and `stack.south` are facilities
    of its own (named after the module, AE titles their upper-cased names)."""
    name = request.module.__name__.rsplit(".", 1)[-1]
    tag = name.removeprefix("test_").removesuffix("_up").replace("_", "")[:10]
    return site_on(shared_stack, tag)
