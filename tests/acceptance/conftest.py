"""One `sidecar up` per test module (a module that needs its own stack starts one itself)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.acceptance.stack import Stack, new_stack, stack_root


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/acceptance/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.acceptance)
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with stack_root() as root:
        running = new_stack(root)
        running.start()
        try:
            yield running
        finally:
            running.stop()
