"""Analytics CSV cells a spreadsheet would take for a formula are written as text."""

from __future__ import annotations

import pytest

from review_gateway.admin.analytics import spreadsheet_safe


@pytest.mark.parametrize("cell", ["=HYPERLINK(\"http://x\")", "+1+2", "-2+3", "@SUM(A1)",
                                  "\tx", "\rx", "=1", "--1", "+", "- 1"])
def test_formula_starts_get_an_apostrophe(cell: str) -> None:
    assert spreadsheet_safe(cell) == "'" + cell


@pytest.mark.parametrize("cell", ["nodule", "", "a=b", 3, -1.5, 0.25, "-", "-2", "+0.5"])
def test_other_cells_are_kept(cell: object) -> None:
    assert spreadsheet_safe(cell) == cell
