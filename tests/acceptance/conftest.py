"""One `sidecar up` per test module (a module that needs its own stack starts one itself)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.acceptance.stack import Stack, new_stack


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/acceptance/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.acceptance)
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root: Path = tmp_path_factory.mktemp("stack")
    running = new_stack(root)
    running.start()
    try:
        yield running
    finally:
        running.stop()
