"""The fault suite: real faults on real servers; every test is slow."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.acceptance.stack import Stack, new_stack
from tests.faults.harness import Faulty


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/faults/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.slow)
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Faulty]:
    """One `sidecar up` per module, as a user starts it."""
    root: Path = tmp_path_factory.mktemp("faults")
    stack: Stack = new_stack(root)
    stack.start()
    try:
        yield Faulty(stack)
    finally:
        stack.stop()
