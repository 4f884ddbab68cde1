"""WADO-RS and QIDO-RS on a running `sidecar up`, driven by dicomweb-client as a viewer would."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
from dicomweb_client.api import DICOMwebClient
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.uid import generate_uid

from tests.acceptance.stack import Stack
from tests.helpers import ct_slice, to_bytes

JPEG2000 = get_testdata_file("JPEG2000.dcm")
RLE_2FRAME = get_testdata_file("SC_rgb_rle_2frame.dcm")
PASSWORD = "wado-radiologist-pw-1"


def _rehome(path: str | None, study: str) -> Dataset:
    ds = pydicom.dcmread(str(path))
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.AccessionNumber, ds.PatientName, ds.PatientID = "ACC-W1", "Wado^Walter", "PW-1"
    return ds


def _stow(stack: Stack, token: str, blobs: list[bytes]) -> None:
    boundary = "wado-acc"
    payload = b"".join(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
                       + blob + b"\r\n" for blob in blobs) + f"--{boundary}--\r\n".encode()
    with stack.client(token) as http:
        stored = http.post(f"/dicomweb/studies?facility={stack.north}", content=payload, headers={
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'})
    assert stored.status_code == 200, stored.text


def _client(stack: Stack, token: str) -> DICOMwebClient:
    return DICOMwebClient(f"{stack.base_url}/dicomweb",
                          headers={"Authorization": f"Bearer {token}"})


def test_viewer_round_trip_through_sidecar_up(stack: Stack) -> None:
    study, series = generate_uid(), generate_uid()
    cts = []
    for i in range(3):
        ds = ct_slice(study, series, z=float(i), accession="ACC-W1", rows=64, cols=64)
        ds.InstanceNumber, ds.PatientName, ds.PatientID = i + 1, "Wado^Walter", "PW-1"
        cts.append(ds)
    j2k, rle = _rehome(JPEG2000, study), _rehome(RLE_2FRAME, study)
    token = stack.login()
    _stow(stack, token, [to_bytes(d) for d in [*cts, j2k, rle]])
    client = _client(stack, token)

    found = client.search_for_studies(search_filters={"PatientName": "wado*"},
                                      fuzzymatching=True)
    assert [s["0020000D"]["Value"][0] for s in found] == [study]
    assert found[0]["00100010"]["Value"] == [{"Alphabetic": "Wado^Walter"}]
    metadata = client.retrieve_series_metadata(study, series)
    assert [m["00200013"]["Value"][0] for m in metadata] == [1, 2, 3]
    assert client.retrieve_bulkdata(metadata[0]["7FE00010"]["BulkDataURI"]) == [cts[0].PixelData]
    assert client.retrieve_instance_frames(study, series, cts[2].SOPInstanceUID, [1]) == \
        [cts[2].PixelData]
    frames = client.retrieve_instance_frames(study, rle.SeriesInstanceUID, rle.SOPInstanceUID,
                                             [1, 2], media_types=(("application/octet-stream",
                                                                   "*"),))
    assert frames == list(generate_frames(rle.PixelData, number_of_frames=2))
    instance = client.retrieve_instance(study, j2k.SeriesInstanceUID, j2k.SOPInstanceUID,
                                        media_types=(("application/dicom",),))
    assert np.array_equal(instance.pixel_array, j2k.pixel_array)
    rendered = client.retrieve_series_rendered(study, series, media_types=("image/png",),
                                               params={"viewport": "32,32"})
    assert Image.open(io.BytesIO(rendered)).size == (32, 32)
    with stack.client(token) as http:
        thumbnail = http.get(f"/dicomweb/studies/{study}/series/{series}/thumbnail")
    assert thumbnail.headers["content-type"] == "image/jpeg"
    assert max(Image.open(io.BytesIO(thumbnail.content)).size) <= 128


def test_scoping_and_no_session_token_in_urls(stack: Stack) -> None:
    study = generate_uid()
    token = stack.login()
    _stow(stack, token, [to_bytes(ct_slice(study, accession="ACC-W2"))])
    done = stack.cli("user", "add", "wado_south", "--role", "radiologist", "--facility",
                     stack.south, "--password-stdin", stdin=PASSWORD + "\n")
    assert done.returncode == 0, done.stderr
    south = stack.login("wado_south", PASSWORD)
    import httpx

    for path in (f"/dicomweb/studies/{study}", f"/dicomweb/studies/{study}/metadata",
                 f"/dicomweb/studies/{study}/thumbnail", f"/dicomweb/studies/{generate_uid()}"):
        reply = httpx.get(stack.base_url + path, timeout=60,
                          headers={"Authorization": f"Bearer {south}"})
        assert reply.status_code == 404, (path, reply.text)
    # A session token in a URL is not accepted (the viewer gets a one-time code instead:
    # tests/security/test_viewer_handover_up.py), and the refused URL's token is not logged.
    in_url = httpx.get(f"{stack.base_url}/dicomweb/studies/{study}/metadata",
                       params={"token": token}, timeout=60)
    assert in_url.status_code == 401, in_url.text
    logs = [stack.output()] + [p.read_text(errors="replace")
                               for p in Path(stack.data_dir).rglob("*.log")]
    assert not any(token in text for text in logs)
    assert any(f"/dicomweb/studies/{study}/metadata?…" in text for text in logs)  # logged
