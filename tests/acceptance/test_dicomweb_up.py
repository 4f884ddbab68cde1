"""STOW-RS and QIDO-RS under /dicomweb on a running `sidecar up`, with a bearer token."""

from __future__ import annotations

import io

import pydicom
from pydicom.data import get_testdata_file

from tests.acceptance.stack import Stack

CT_SMALL = get_testdata_file("CT_small.dcm")


def _multipart(parts: list[bytes], boundary: str = "acc-boundary") -> tuple[bytes, str]:
    body = b"".join(b"--" + boundary.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n"
                    + p + b"\r\n" for p in parts) + b"--" + boundary.encode() + b"--\r\n"
    return body, f'multipart/related; type="application/dicom"; boundary={boundary}'


def test_stow_then_qido_through_the_gateway(stack: Stack) -> None:
    ds = pydicom.dcmread(CT_SMALL)
    buf = io.BytesIO()
    ds.save_as(buf)
    body, content_type = _multipart([buf.getvalue()])
    with stack.client() as http:
        stored = http.post("/dicomweb/studies?facility=acc_north", content=body,
                           headers={"Content-Type": content_type,
                                    "Accept": "application/dicom+json"})
        assert stored.status_code == 200, stored.text
        assert stored.json()["00081199"]["Value"][0]["00081155"]["Value"] == [ds.SOPInstanceUID]
        found = http.get("/dicomweb/studies", params={"StudyInstanceUID": ds.StudyInstanceUID})
        assert found.status_code == 200, found.text
        assert [s["0020000D"]["Value"][0] for s in found.json()] == [ds.StudyInstanceUID]


def test_dicomweb_needs_a_token(stack: Stack) -> None:
    import httpx

    reply = httpx.get(f"{stack.base_url}/dicomweb/studies", timeout=30)
    assert reply.status_code == 401
