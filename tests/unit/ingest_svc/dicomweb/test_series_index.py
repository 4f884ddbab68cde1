"""The series index's metadata equals pydicom's DICOM JSON; frame offsets slice the frames."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.encaps import generate_frames

from ingest_svc.dicomweb import series_index as si

TEST_FILES = Path(str(get_testdata_file("CT_small.dcm"))).parent



def _reference(data: bytes) -> dict[str, object]:
    """pydicom's own DICOM JSON of every non-binary top-level element."""
    from io import BytesIO

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(BytesIO(data), force=True)
        return {f"{int(elem.tag):08X}": elem.to_json_dict(None, 1 << 62)
                for elem in ds if elem.VR not in si._BINARY_VRS}


def _comparable(path: Path) -> bool:
    try:
        _reference(path.read_bytes())
    except Exception:
        return False
    return True


# The test files pydicom itself can turn into DICOM JSON (the reference the index must equal);
# the few it cannot (e.g. a truncated file) have no reference to compare with.
NAMES = sorted(p.name for p in TEST_FILES.glob("*.dcm") if _comparable(p))


def _read(data: bytes) -> pydicom.Dataset:
    from io import BytesIO

    return pydicom.dcmread(BytesIO(data), force=True)


@pytest.mark.parametrize("name", NAMES)
def test_metadata_matches_pydicom(name: str) -> None:
    data = (TEST_FILES / name).read_bytes()
    reference = _reference(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = si.InstanceRef("1.2", "1.3", "1.4", "1.2.840.10008.1.2.1", "k")
        ours = si.instance_json(_read(data), ref)
    for tag, expected in reference.items():
        assert ours.get(tag) == expected, tag
    json.dumps(ours)


@pytest.mark.parametrize("name", ["SC_rgb_rle_2frame.dcm", "rtdose.dcm", "JPEG2000.dcm",
                                  "CT_small.dcm", "SC_rgb_jpeg_gdcm.dcm"])
def test_frame_offsets_slice_the_frames(name: str) -> None:
    data = (TEST_FILES / name).read_bytes()
    ds = _read(data)
    ref = si.InstanceRef("1.2", "1.3", "1.4", str(ds.file_meta.TransferSyntaxUID), "k")
    entry = si.frame_index(data, ds, ref)
    assert entry["direct"]
    frames = [b"".join(data[o:o + n] for o, n in spans) for spans in entry["frames"]]
    full = _read(data)
    if full.file_meta.TransferSyntaxUID.is_encapsulated:
        assert frames == list(generate_frames(full.PixelData, number_of_frames=entry["n"]))
    else:
        assert b"".join(frames) == full.PixelData[:sum(len(f) for f in frames)]
