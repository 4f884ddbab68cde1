"""A server that several test modules share: started on first use, stopped after its last test.

A session-scoped fixture would keep it running (and using CPU and memory) until the whole run
ends; this one stops after the last collected test that uses the fixture named `fixture`. The
conftest that holds it moves the modules that use it next to one another, calls `collected`
once collection is done, `after_test` after each test's teardown and `stop` at the session's
end (which also covers an interrupted run)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack
from typing import Generic, TypeVar

import pytest

T = TypeVar("T")


def under(folder: str) -> Callable[[pytest.Item], bool]:
    """Whether a collected test lives under `folder` (e.g. "tests/faults/")."""
    def inside(item: pytest.Item) -> bool:
        return folder in str(item.fspath).replace("\\", "/")
    return inside


class Shared(Generic[T]):
    def __init__(self, fixture: str, start: Callable[[], AbstractContextManager[T]]) -> None:
        self.fixture = fixture
        self._start = start
        self._running = ExitStack()
        self.value: T | None = None
        self.last_user: str | None = None  # node id of the last test that uses it

    def uses(self, item: pytest.Item) -> bool:
        return self.fixture in getattr(item, "fixturenames", ())

    def group(self, items: list[pytest.Item], in_scope: Callable[[pytest.Item], bool]) -> None:
        """Within the items `in_scope`, the modules that use the server run last, one after
        another; whole modules move, and the order inside a module stays."""
        positions = [i for i, item in enumerate(items) if in_scope(item)]
        block = [items[i] for i in positions]
        sharing = {item.path for item in block if self.uses(item)}
        ordered = ([item for item in block if item.path not in sharing]
                   + [item for item in block if item.path in sharing])
        for i, item in zip(positions, ordered, strict=True):
            items[i] = item

    def collected(self, session: pytest.Session) -> None:
        users = [item.nodeid for item in session.items if self.uses(item)]
        self.last_user = users[-1] if users else None

    def get(self) -> T:
        if self.value is None:
            self.value = self._running.enter_context(self._start())
        return self.value

    def after_test(self, item: pytest.Item) -> None:
        if item.nodeid == self.last_user:
            self.stop()

    def stop(self) -> None:
        self.value = None
        self._running.close()
