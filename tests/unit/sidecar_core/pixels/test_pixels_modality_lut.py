"""The Modality LUT Sequence at every entry depth the standard allows, and the pipeline's promise
that an input nobody foresaw fails as a named error (its series goes on) instead of a bare one."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut
from pydicom.sequence import Sequence

from imaging_svc.assets.series_assets import decode_tolerant
from sidecar_core.pixels import decode as decode_module
from sidecar_core.pixels import decode_image
from sidecar_core.pixels.errors import InvalidPixelDescription, PixelDecodeError
from tests.unit.sidecar_core.pixels.test_pixels_support import make_image, reread

# Every dataset here is built in the test with pydicom (test_pixels_support, imported above).
STORED = np.array([[0, 1, 2, 3], [100, 1000, 4094, 4095]], dtype=np.uint16)


def with_modality_lut(ds: Dataset, entries: np.ndarray, bits: int, first: int = 0) -> Dataset:
    """Adds a Modality LUT Sequence whose entries are 16-bit words (OW), as a 9-16-bit table is."""
    item = Dataset()
    item.LUTDescriptor = [len(entries) % 65536, first, bits]
    item.ModalityLUTType = "OD"
    item.LUTData = entries.astype("<u2").tobytes()
    item["LUTData"].VR = "OW"
    ds.ModalityLUTSequence = Sequence([item])
    for keyword in ("RescaleSlope", "RescaleIntercept", "RescaleType"):
        if keyword in ds:
            delattr(ds, keyword)
    return ds


@pytest.mark.parametrize("bits", [10, 12, 14, 16])
def test_a_modality_lut_of_any_depth_maps_each_stored_value_to_its_entry(bits: int) -> None:
    entries = (np.arange(4096, dtype=np.int64) * 7 % (1 << bits)).astype(np.uint16)
    ds = reread(with_modality_lut(make_image(STORED, bits_stored=12, modality="MG"), entries,
                                  bits))
    image = decode_image(ds)
    assert image.modality_transform.kind == "lut"
    np.testing.assert_array_equal(image.frames[0], entries[STORED].astype(np.float32))
    if bits == 16:  # where pydicom reads the table too, it agrees
        np.testing.assert_array_equal(image.frames[0], apply_modality_lut(STORED, ds))


def test_stored_values_outside_the_table_read_its_first_and_last_entries() -> None:
    entries = np.array([500, 600, 700], dtype=np.uint16)
    ds = reread(with_modality_lut(make_image(STORED, bits_stored=12, modality="MG"), entries,
                                  12, first=1))
    np.testing.assert_array_equal(
        decode_image(ds).frames[0],
        np.array([[500, 500, 600, 700], [700, 700, 700, 700]], dtype=np.float32))


def test_a_modality_lut_without_data_is_a_named_error() -> None:
    ds = with_modality_lut(make_image(STORED, bits_stored=12, modality="MG"),
                           np.arange(16, dtype=np.uint16), 12)
    del ds.ModalityLUTSequence[0].LUTData
    with pytest.raises(InvalidPixelDescription, match="Modality LUT Sequence"):
        decode_image(reread(ds))


def test_an_unforeseen_error_becomes_a_named_one_and_the_series_goes_on(
        monkeypatch: pytest.MonkeyPatch) -> None:
    good = reread(make_image(STORED, bits_stored=12, sop_uid="1.2.3.1", instance_number=1,
                             position=(0, 0, 0)))
    odd = reread(make_image(STORED, bits_stored=12, sop_uid="1.2.3.2", instance_number=2,
                            position=(0, 0, 1)))
    real = decode_module.to_physical

    def to_physical(stored: np.ndarray, ds: Dataset, *args: object, **kwargs: object) -> object:
        if ds.SOPInstanceUID == "1.2.3.2":
            raise TypeError("a library's surprise")
        return real(stored, ds, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(decode_module, "to_physical", to_physical)
    with pytest.raises(PixelDecodeError, match=r"TypeError: a library's surprise"):
        decode_image(odd)
    series, failures = decode_tolerant([good, odd])
    assert series is not None and series.image.n_frames == 1
    assert [(f.sop_instance_uid, f.error_class) for f in failures] == [
        ("1.2.3.2", "PixelDecodeError")]
