"""One `sidecar up` shared by the acceptance modules that use it on its defaults, each module on
two facilities of its own; a module that needs its own settings or stops the stack starts its own.

Starting and stopping a stack takes 20-30 s on two cores; most modules only read and write
their own facilities' studies, users and settings, which another module cannot see. Two things
are shared and must stay unique per module: user names, and synthetic study seeds (`sidecar
synth` derives the UIDs and the accession number from the seed, whatever the kind)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from tests.acceptance.stack import Stack, new_stack, site_on, stack_root
from tests.sharing import Shared


@contextmanager
def _shared_up() -> Iterator[Stack]:
    with stack_root() as root:
        running = new_stack(root, facilities=())  # each module adds its own
        try:
            running.start()
            yield running
        finally:
            running.stop()


SHARED = Shared("shared_stack", _shared_up)


def _is_acceptance(item: pytest.Item) -> bool:
    return "tests/acceptance/" in str(item.fspath).replace("\\", "/")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _is_acceptance(item):
            item.add_marker(pytest.mark.acceptance)
            item.add_marker(pytest.mark.slow)
    SHARED.group(items, _is_acceptance)  # the shared stack is up only while its modules run


def pytest_collection_finish(session: pytest.Session) -> None:
    SHARED.collected(session)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    yield
    SHARED.after_test(item)  # not at the session's end: the rest of the suite needs the CPUs


def pytest_sessionfinish(session: pytest.Session) -> None:
    SHARED.stop()


@pytest.fixture(scope="session")
def shared_stack() -> Stack:
    return SHARED.get()


@pytest.fixture(scope="module")
def stack(shared_stack: Stack, request: pytest.FixtureRequest) -> Stack:
    """The shared stack as this module sees it: `stack.north` and `stack.south` are facilities
    of its own (named after the module, AE titles their upper-cased names)."""
    name = request.module.__name__.rsplit(".", 1)[-1]
    tag = name.removeprefix("test_").removesuffix("_up").replace("_", "")[:10]
    return site_on(shared_stack, tag)
