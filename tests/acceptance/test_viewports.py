"""Viewports on demand through `sidecar up`: the first request renders a slice in a preset, later
ones get the stored image (same ETag, 304); concurrent first requests make one asset; another
facility's radiologist gets 404; an unknown preset is a 404 naming the series' presets."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.acceptance.stack import Stack
from tests.acceptance.test_gateway_up import Study, assert_error, send, wait_ready


@pytest.fixture(scope="module")
def study(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Study:
    # seed 24: a brain MR with a lesion that no other module on the shared stack sends
    return wait_ready(stack, send(stack, tmp_path_factory.mktemp("in"), stack.north, 24))


def _rows(stack: Stack, series_id: str, preset: str, z: int) -> int:
    [(count,)] = stack.sql("SELECT count(*) FROM assets WHERE series_id = %s AND kind = 'viewport'"
                           " AND preset = %s AND slice_index = %s", series_id, preset, z)
    return int(count)


def _unmarked(study: Study) -> tuple[dict[str, Any], list[int]]:
    """The findings' series and its slices without findings (the overlay job draws on those)."""
    finding = study.findings[0]
    series = next(s for s in study.detail["series"] if s["id"] == finding["series_id"])
    marked = {f["slice_index"] for f in study.findings}
    return series, [z for z in range(series["slice_count"]) if z not in marked]


def test_key_slices_are_known_at_ready_for_review(study: Study) -> None:
    # wait_ready read the findings as soon as the study was ready_for_review
    assert study.findings and all(f["slice_index"] >= 0 and f["series_id"]
                                  for f in study.findings if f["bbox_px"])


def test_a_viewport_is_rendered_once_on_demand_then_cached(stack: Stack, study: Study) -> None:
    series, free = _unmarked(study)
    preset, z = series["presets"][-1], free[0]
    url = series["viewport_url_template"].format(slice=z, preset=preset)
    assert _rows(stack, series["id"], preset, z) == 0, "not rendered before it is asked for"
    with stack.client() as http:
        first = http.get(url)
        assert first.status_code == 200 and first.headers["content-type"] == "image/png"
        assert first.content[:4] == b"\x89PNG"
        second = http.get(url)
        assert second.status_code == 200 and second.headers["ETag"] == first.headers["ETag"]
        assert second.content == first.content
        cached = http.get(url, headers={"If-None-Match": first.headers["ETag"]})
        assert cached.status_code == 304
    assert _rows(stack, series["id"], preset, z) == 1


def test_concurrent_first_requests_make_one_asset(stack: Stack, study: Study) -> None:
    series, free = _unmarked(study)
    preset, z = series["presets"][0], free[1]
    url = series["viewport_url_template"].format(slice=z, preset=preset)
    with stack.client() as http, ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(lambda _: http.get(url), range(8)))
    assert [r.status_code for r in replies] == [200] * 8
    assert len({r.headers["ETag"] for r in replies}) == 1
    assert _rows(stack, series["id"], preset, z) == 1


def test_unknown_preset_and_slice_are_404(stack: Stack, study: Study) -> None:
    series, free = _unmarked(study)
    with stack.client() as http:
        reply = http.get(series["viewport_url_template"].format(slice=free[0], preset="nonsense"))
        assert_error(reply, 404, "NOT_FOUND")
        error = reply.json()["error"]
        assert error["reason"] == "PRESET_NOT_FOUND" and "'nonsense'" in error["message"]
        assert all(p in error["message"] for p in series["presets"])
        beyond = http.get(series["viewport_url_template"].format(
            slice=series["slice_count"], preset=series["presets"][0]))
        assert_error(beyond, 404, "NOT_FOUND")
        assert beyond.json()["error"]["reason"] == "SLICE_NOT_FOUND"


def test_another_facility_gets_404_and_nothing_is_rendered(stack: Stack, study: Study) -> None:
    series, free = _unmarked(study)
    preset, z = series["presets"][0], free[2]
    added = stack.cli("user", "add", "vp_south", "--role", "radiologist", "--facility",
                      stack.south, "--password-stdin", stdin="south viewer pw\n")
    assert added.returncode == 0, added.stderr
    with stack.client(stack.login("vp_south", "south viewer pw")) as http:
        reply = http.get(series["viewport_url_template"].format(slice=z, preset=preset))
        assert_error(reply, 404, "NOT_FOUND")
        assert reply.json()["error"]["reason"] == "STUDY_NOT_FOUND"
    assert _rows(stack, series["id"], preset, z) == 0
