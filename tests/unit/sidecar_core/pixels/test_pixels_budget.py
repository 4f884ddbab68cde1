"""The pixel budget: sizes of real studies pass, a header declaring 65,535 × 65,535 × 1,000
pixels is refused before any decode, by the pixel library and the gateway's transcoder alike."""

from __future__ import annotations

import resource
import time

import pytest

from review_gateway.dicomweb import transcode
from sidecar_core.pixels import PixelBudgetExceeded, budget, decode_image
from sidecar_core.pixels.budget import PixelBudget
from tests.helpers import ct_slice, declaring_huge_pixels, to_bytes

# (rows, columns, frames, samples, bits) of objects the default budget must take
REAL = {
    "CT slice": (512, 512, 1, 1, 16),
    "mammogram": (4096, 5120, 1, 1, 16),
    "breast tomosynthesis": (4096, 5120, 100, 1, 16),
    "enhanced CT": (512, 512, 4000, 1, 16),
    "enhanced MR": (256, 256, 3000, 1, 16),
    "colour ultrasound cine": (600, 800, 500, 3, 8),
    "whole-body PET/CT fused RGB": (512, 512, 1500, 3, 8),
}


@pytest.mark.parametrize("size", REAL.values(), ids=REAL.keys())
def test_default_budget_takes_real_studies(size: tuple[int, int, int, int, int]) -> None:
    PixelBudget().check(*size)


def test_default_budget_refuses_65535_squared_by_1000_naming_the_sizes() -> None:
    with pytest.raises(PixelBudgetExceeded) as refused:
        PixelBudget().check(65535, 65535, 1000)
    message = str(refused.value)
    assert "65535 rows × 65535 columns × 1000 frames" in message
    assert "SIDECAR_MAX_PIXELS" in message and refused.value.reason == "PIXEL_BUDGET_EXCEEDED"


def test_bytes_limit_counts_samples_and_bits() -> None:
    small = PixelBudget(max_pixels=10**9, max_bytes=3 * 1000 * 1000)
    small.check(1000, 1000, 1, 3, 8)
    with pytest.raises(PixelBudgetExceeded):
        small.check(1000, 1000, 1, 3, 16)


def test_decode_refuses_a_huge_declaration_before_reading_the_pixels() -> None:
    huge = declaring_huge_pixels(ct_slice())
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    with pytest.raises(PixelBudgetExceeded, match="4,294,836,225,000 pixels"):
        decode_image(huge)
    assert time.perf_counter() - started < 1.0
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before < 50 * 1024  # KiB


def test_the_configured_budget_is_the_one_decode_uses() -> None:
    normal = ct_slice(rows=16, cols=16)
    assert decode_image(normal).frames.shape == (1, 16, 16)
    try:
        budget.configure(PixelBudget(max_pixels=255))
        with pytest.raises(PixelBudgetExceeded, match="256 pixels"):
            decode_image(normal)
    finally:
        budget.configure(PixelBudget())
    assert decode_image(normal).n_frames == 1


def test_gateway_transcoder_refuses_before_decoding() -> None:
    data = to_bytes(declaring_huge_pixels(ct_slice()))
    with pytest.raises(transcode.OverPixelBudget, match="over the pixel budget"):
        transcode.FrameDecoder().uncompressed("huge", data)
    with pytest.raises(transcode.OverPixelBudget):
        transcode.instance(data, "1.2.840.10008.1.2.1")


def test_a_series_is_held_to_the_budget_as_one_volume() -> None:
    from sidecar_core.pixels.series import decode_series

    series = [ct_slice(study_uid="1.2.3", series_uid="1.2.3.4", z=float(z)) for z in range(4)]
    assert decode_series(series).image.n_frames == 4
    try:  # each 16 × 16 slice fits, the four together do not
        budget.configure(PixelBudget(max_pixels=3 * 256))
        with pytest.raises(PixelBudgetExceeded, match="the series' 4 objects hold 1,024 pixels"):
            decode_series(series)
    finally:
        budget.configure(PixelBudget())


def test_a_huge_object_in_a_series_is_refused_before_any_of_it_is_decoded() -> None:
    from sidecar_core.pixels.series import decode_series

    series = [ct_slice(study_uid="1.2.3", series_uid="1.2.3.4", z=float(z)) for z in range(3)]
    with pytest.raises(PixelBudgetExceeded, match="65535 rows"):
        decode_series([*series, declaring_huge_pixels(series[0])])
