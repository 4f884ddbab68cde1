"""One `sidecar up` shared by the acceptance modules that use it on its defaults, each module on
two facilities of its own, and one `sidecar demo` shared by the demo and OHIF modules; a module
that needs its own settings starts its own.

Starting and stopping a stack takes 20-30 s on two cores; most modules only read and write
their own facilities' studies, users and settings, which another module cannot see. Two things
are shared and must stay unique per module: user names, and synthetic study seeds (`sidecar
synth` derives the UIDs and the accession number from the seed, whatever the kind)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from sidecar_app.runtime.supervisor import DEFAULT_PORTS
from tests.acceptance.stack import DemoStack, Stack, new_stack, site_on, stack_root
from tests.servers import free_port
from tests.sharing import Shared, under


@contextmanager
def _shared_up() -> Iterator[Stack]:
    with stack_root() as root:
        running = new_stack(root, facilities=())  # each module adds its own
        try:
            running.start()
            yield running
        finally:
            running.stop()


@contextmanager
def _shared_demo() -> Iterator[DemoStack]:
    with stack_root() as root:
        running = DemoStack(root / "demo-data", ports={n: free_port() for n in DEFAULT_PORTS})
        try:
            running.start()
            yield running
        finally:
            running.stop()


SHARED = Shared("shared_stack", _shared_up)
# test_demo_up stops the demo with Ctrl-C and starts it again on the same data dir, last in
# its module; test_ohif's tests run on the demo as it came back.
DEMO = Shared("shared_demo", _shared_demo)


_is_acceptance = under("tests/acceptance/")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _is_acceptance(item):
            item.add_marker(pytest.mark.acceptance)
            item.add_marker(pytest.mark.slow)
    # each shared stack is up only while its modules run
    DEMO.group(items, _is_acceptance)
    SHARED.group(items, _is_acceptance)


def pytest_collection_finish(session: pytest.Session) -> None:
    SHARED.collected(session)
    DEMO.collected(session)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    yield
    SHARED.after_test(item)  # not at the session's end: the rest of the suite needs the CPUs
    DEMO.after_test(item)


def pytest_sessionfinish(session: pytest.Session) -> None:
    SHARED.stop()
    DEMO.stop()


@pytest.fixture(scope="session")
def shared_stack() -> Stack:
    return SHARED.get()


@pytest.fixture(scope="session")
def shared_demo() -> DemoStack:
    return DEMO.get()


@pytest.fixture(scope="module")
def stack(shared_stack: Stack, request: pytest.FixtureRequest) -> Stack:
    """The shared stack as this module sees it: `stack.north` and `stack.south` are facilities
    of its own (named after the module, AE titles their upper-cased names)."""
    name = request.module.__name__.rsplit(".", 1)[-1]
    tag = name.removeprefix("test_").removesuffix("_up").replace("_", "")[:10]
    return site_on(shared_stack, tag)
