"""STOW-RS and QIDO-RS under /dicomweb on a running `sidecar up`, with a bearer token."""

from __future__ import annotations

import io

import pydicom
import pytest
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
        stored = http.post(f"/dicomweb/studies?facility={stack.north}", content=body,
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


def _ct(**changes: str) -> tuple[pydicom.Dataset, bytes]:
    """CT_small.dcm with fresh UIDs (and any attribute changed), as Part 10 bytes."""
    from pydicom.uid import generate_uid

    ds = pydicom.dcmread(CT_SMALL)
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    buf = io.BytesIO()
    ds.save_as(buf)
    return ds, buf.getvalue()


def _failure_reasons(body: dict[str, object]) -> list[int]:
    failed = body.get("00081198", {})
    return [item["00081197"]["Value"][0] for item in failed.get("Value", [])]  # type: ignore


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
def test_stow_answers_202_when_some_parts_fail_and_409_when_all_do(stack: Stack) -> None:
    _, good = _ct()
    _, bad_uid = _ct(SOPInstanceUID="1.2.03.4")  # a component with a leading zero: PS3.5 9.1
    headers = {"Accept": "application/dicom+json"}
    with stack.client() as http:
        body, content_type = _multipart([good, b"not dicom at all"])
        some = http.post(f"/dicomweb/studies?facility={stack.north}", content=body,
                         headers={**headers, "Content-Type": content_type})
        assert some.status_code == 202, some.text
        assert _failure_reasons(some.json()) == [0xC000]
        body, content_type = _multipart([bad_uid])
        none = http.post(f"/dicomweb/studies?facility={stack.north}", content=body,
                         headers={**headers, "Content-Type": content_type})
        assert none.status_code == 409, none.text
        assert _failure_reasons(none.json()) == [0xA900]


def test_stow_needs_a_facility_for_an_admin(stack: Stack) -> None:
    _, data = _ct()
    body, content_type = _multipart([data])
    with stack.client() as http:
        reply = http.post("/dicomweb/studies", content=body,
                          headers={"Content-Type": content_type})
    assert reply.status_code == 400 and reply.json()["error"]["reason"] == "FACILITY_REQUIRED"


def test_qido_series_and_instances_and_the_nested_forms(stack: Stack) -> None:
    ds, data = _ct()
    body, content_type = _multipart([data])
    with stack.client() as http:
        stored = http.post(f"/dicomweb/studies/{ds.StudyInstanceUID}?facility={stack.south}",
                           content=body, headers={"Content-Type": content_type})
        assert stored.status_code == 200, stored.text
        study, series = ds.StudyInstanceUID, ds.SeriesInstanceUID
        for path, params in (
                ("/dicomweb/series", {"StudyInstanceUID": study}),
                (f"/dicomweb/studies/{study}/series", {}),
                ("/dicomweb/instances", {"SOPInstanceUID": ds.SOPInstanceUID}),
                (f"/dicomweb/studies/{study}/instances", {}),
                (f"/dicomweb/studies/{study}/series/{series}/instances", {})):
            found = http.get(path, params=params)
            assert found.status_code == 200, (path, found.text)
            assert found.headers["content-type"].startswith("application/dicom+json")
            rows = found.json()
            assert len(rows) == 1 and rows[0]["0020000D"]["Value"] == [study], path


def test_qido_matches_patient_id_within_the_callers_facilities(stack: Stack) -> None:
    ds, data = _ct()
    body, content_type = _multipart([data])
    with stack.client() as http:
        assert http.post(f"/dicomweb/studies?facility={stack.north}", content=body,
                         headers={"Content-Type": content_type}).status_code == 200
        found = http.get("/dicomweb/studies", params={"PatientID": ds.PatientID})
        assert found.status_code == 200, found.text
        assert ds.StudyInstanceUID in [s["0020000D"]["Value"][0] for s in found.json()]
        none = http.get("/dicomweb/studies", params={"PatientID": "NO-SUCH-PATIENT"})
        assert none.status_code == 200 and none.json() == []


def test_stow_into_another_study_than_the_target_fails_that_part(stack: Stack) -> None:
    _, data = _ct()
    body, content_type = _multipart([data])
    with stack.client() as http:
        reply = http.post(f"/dicomweb/studies/1.2.3.4.5?facility={stack.north}", content=body,
                          headers={"Content-Type": content_type})
    assert reply.status_code == 409 and _failure_reasons(reply.json()) == [0xA900]
