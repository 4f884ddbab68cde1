"""QIDO-RS and WADO-RS answers a hostile or broken DICOMweb PACS could give, served by a real
HTTP server on loopback and read through the egress policy's pinned client: each is refused
with a precise cause (or, for another patient's or study's data, left out), never a crash."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse
from pydicom.uid import generate_uid

from sidecar_core.dicom.dicomweb_scu import (
    DicomwebFailed,
    DicomwebPeer,
    Limits,
    MultipartReader,
    Part,
    authorization_problem,
    find_studies,
    retrieve_study,
)
from sidecar_core.egress import EgressPolicy, pinned_client
from tests.helpers import ct_slice, to_bytes
from tests.http_peers import serve

PATIENT = "PAT-7"
BOUNDARY = "b0und4ry-1234"


class Pacs:
    """What the fake PACS answers next, per path: (status, content type, body chunks)."""

    def __init__(self) -> None:
        self.answers: dict[str, tuple[int, str, list[bytes]]] = {}
        self.seen: list[dict[str, Any]] = []
        self.app = FastAPI()

        @self.app.get("/dicom-web/{path:path}")
        async def answer(path: str, request: Request) -> Response:
            self.seen.append({"path": path, "query": dict(request.query_params),
                              "accept": request.headers.get("accept", ""),
                              "authorization": request.headers.get("authorization", "")})
            status, media, chunks = self.answers["/" + path]

            async def body() -> AsyncIterator[bytes]:
                for chunk in chunks:
                    yield chunk

            return StreamingResponse(body(), status_code=status, media_type=media)


@pytest.fixture(scope="module")
def pacs() -> Iterator[tuple[Pacs, int]]:
    p = Pacs()
    with serve(p.app) as port:
        yield p, port


async def _client(port: int) -> httpx.AsyncClient:
    checked = await EgressPolicy.parse("127.0.0.1").check_url(f"http://127.0.0.1:{port}/")
    return pinned_client(checked, 10)


def _peer(port: int, auth: str = "") -> DicomwebPeer:
    return DicomwebPeer(f"http://127.0.0.1:{port}/dicom-web", auth)


def _study(uid: str, date: str, patient: str = PATIENT) -> dict[str, Any]:
    return {"0020000D": {"vr": "UI", "Value": [uid]}, "00080020": {"vr": "DA", "Value": [date]},
            "00100020": {"vr": "LO", "Value": [patient]},
            "00080061": {"vr": "CS", "Value": ["CT"]},
            "00081030": {"vr": "LO", "Value": [f"CT {date}"]},
            "00080050": {"vr": "SH", "Value": [f"A-{date}"]},
            "00201208": {"vr": "IS", "Value": [3]}}


async def _find(port: int, **kw: Any) -> Any:
    async with await _client(port) as http:
        return await find_studies(http, _peer(port, "Bearer tok-1"), PATIENT, modality="CT",
                                  since="20150101", **kw)


async def test_qido_keeps_the_patients_priors_newest_first(pacs: tuple[Pacs, int]) -> None:
    server, port = pacs
    current, old, older, other = (generate_uid() for _ in range(4))
    server.answers["/studies"] = (200, "application/dicom+json", [json.dumps([
        _study(older, "20190101"), _study(current, "20250105"), _study(old, "20230310"),
        _study(other, "20240101", patient="PAT-9"),
        {k: v for k, v in _study(generate_uid(), "20220101").items() if k != "00100020"},
    ]).encode()])
    result = await _find(port, exclude_uid=current, limit=50)
    assert [s.study_instance_uid for s in result.studies] == [old, older]
    assert result.other_patient == 2  # another patient's, and one naming no patient
    first = result.studies[0]
    assert (first.study_date, first.description, first.modalities, first.accession,
            first.instance_count) == ("20230310", "CT 20230310", ("CT",), "A-20230310", 3)
    asked = server.seen[-1]
    assert asked["query"]["PatientID"] == PATIENT and asked["query"]["ModalitiesInStudy"] == "CT"
    assert asked["query"]["StudyDate"] == "20150101-" and asked["query"]["limit"] == "200"
    assert asked["accept"] == "application/dicom+json"
    assert asked["authorization"] == "Bearer tok-1"
    limited = await _find(port, exclude_uid=current, limit=1)
    assert [s.study_instance_uid for s in limited.studies] == [old]


async def test_qido_no_content_is_no_priors(pacs: tuple[Pacs, int]) -> None:
    server, port = pacs
    server.answers["/studies"] = (204, "application/dicom+json", [])
    assert (await _find(port)).studies == []


@pytest.mark.parametrize(("status", "media", "body", "cause", "transient"), [
    (200, "application/dicom+json", b"[{\"0020000D\": ", "is not JSON", False),
    (200, "application/dicom+json", b"{\"studies\": []}", "not a JSON array", False),
    (200, "application/dicom+json", b"[1, 2]", "match 1 of the QIDO-RS answer is not a JSON",
     False),
    (200, "application/dicom+json",
     json.dumps([{"0020000D": {"vr": "UI", "Value": ["../../etc/passwd"]}}]).encode(),
     "is not a DICOM UID", False),
    (200, "application/dicom+json", json.dumps([{"0020000D": "1.2.3"}]).encode(),
     "not a DICOM JSON element", False),
    (200, "text/html", b"<html>login</html>", "answered 'text/html', not application/dicom+json",
     False),
    (401, "application/json", b"{}", "HTTP 401", False),
    (404, "text/plain", b"no", "HTTP 404", False),
    (503, "text/plain", b"busy", "HTTP 503", True),
])
async def test_qido_refuses_a_bad_answer_precisely(pacs: tuple[Pacs, int], status: int,
                                                   media: str, body: bytes, cause: str,
                                                   transient: bool) -> None:
    server, port = pacs
    server.answers["/studies"] = (status, media, [body])
    with pytest.raises(DicomwebFailed) as caught:
        await _find(port)
    assert cause in str(caught.value)
    assert caught.value.transient is transient


async def test_qido_refuses_a_huge_or_endless_answer(pacs: tuple[Pacs, int]) -> None:
    server, port = pacs
    server.answers["/studies"] = (200, "application/dicom+json", [b"[" + b" " * 65536] * 100)
    with pytest.raises(DicomwebFailed, match="larger than 1048576 bytes"):
        await _find(port, limits=Limits(qido_bytes=1024 * 1024))
    # a PACS ignoring limit: only the first 4 × limit matches are read, as with C-FIND
    many = [_study(generate_uid(), f"2020010{d}") for d in range(1, 10)]
    server.answers["/studies"] = (200, "application/dicom+json", [json.dumps(many).encode()])
    kept = (await _find(port, limit=2)).studies
    assert [s.study_date for s in kept] == ["20200108", "20200107"]


def _instance(study: str, patient: str = PATIENT) -> bytes:
    ds = ct_slice(study, generate_uid())
    ds.PatientID = patient
    return to_bytes(ds)


def _multipart(parts: list[tuple[str, bytes]], close: bool = True) -> bytes:
    out = b"preamble to ignore\r\n"
    for media, data in parts:
        out += f"--{BOUNDARY}\r\nContent-Type: {media}\r\n\r\n".encode() + data + b"\r\n"
    return out + (f"--{BOUNDARY}--\r\n".encode() if close else b"")


WADO_TYPE = f'multipart/related; type="application/dicom"; boundary="{BOUNDARY}"'


async def _retrieve(port: int, study: str, limits: Limits | None = None
                    ) -> tuple[Any, list[Part]]:
    stored: list[Part] = []

    async def store(part: Part) -> None:
        stored.append(part)

    async with await _client(port) as http:
        result = await retrieve_study(http, _peer(port), study, PATIENT, store, limits=limits)
    return result, stored


async def test_wado_stores_the_studys_parts_and_leaves_out_others(
        pacs: tuple[Pacs, int]) -> None:
    server, port = pacs
    study = generate_uid()
    mine = [_instance(study) for _ in range(3)]
    body = _multipart([("application/dicom", mine[0]),
                       ("application/dicom", _instance(generate_uid())),  # another study
                       ("application/dicom; transfer-syntax=1.2.840.10008.1.2.1", mine[1]),
                       ("application/dicom", _instance(study, patient="PAT-9")),  # other patient
                       ("application/dicom", mine[2])])
    # delivered in awkward pieces: the framing must not depend on chunk edges
    server.answers[f"/studies/{study}"] = (200, WADO_TYPE, [body[i:i + 7]
                                                           for i in range(0, len(body), 7)])
    result, stored = await _retrieve(port, study)
    assert [p.data for p in stored] == mine
    assert (result.parts, result.delivered, result.ignored) == (5, 3, 2)
    assert server.seen[-1]["accept"] == ('multipart/related; type="application/dicom"; '
                                         'transfer-syntax=*')


@pytest.mark.parametrize(("media", "body", "limits", "cause"), [
    ("application/dicom", b"DICM", None, "answered 'application/dicom', not multipart"),
    ("multipart/related; type=\"application/dicom\"", b"", None, "no usable boundary"),
    (WADO_TYPE, "not-dicom", None, "part 2 is not a DICOM file (no DICM prefix)"),
    (WADO_TYPE, "garbled", None, "part 2 is not a readable DICOM file"),
    (WADO_TYPE, "html-part", None, "part 2 is 'text/html', not application/dicom"),
    (WADO_TYPE, "truncated", None, "ends before its closing boundary (truncated after 2"),
    (WADO_TYPE, "ok", Limits(parts=2), "more than 2 parts"),
    (WADO_TYPE, "ok", Limits(object_bytes=1000), "part 1 is larger than 1000 bytes"),
    (WADO_TYPE, "ok", Limits(study_bytes=3000), "is larger than 3000 bytes"),
    (WADO_TYPE, "empty", None, "the answer has no parts"),
])
async def test_wado_refuses_a_bad_answer_precisely(pacs: tuple[Pacs, int], media: str,
                                                   body: Any, limits: Limits | None,
                                                   cause: str) -> None:
    server, port = pacs
    study = generate_uid()
    good = _instance(study)
    bodies = {
        "not-dicom": _multipart([("application/dicom", good),
                                 ("application/dicom", b"%PDF-1.4 " * 40)]),
        "garbled": _multipart([("application/dicom", good), ("application/dicom",
                               b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\xff\xff" + b"x" * 9)]),
        "html-part": _multipart([("application/dicom", good), ("text/html", b"<p>hi</p>")]),
        "truncated": _multipart([("application/dicom", good), ("application/dicom", good),
                                 ("application/dicom", good[:500])], close=False),
        "ok": _multipart([("application/dicom", good)] * 3),
        "empty": f"--{BOUNDARY}--\r\n".encode(),
    }
    server.answers[f"/studies/{study}"] = (200, media, [bodies.get(body, body)])  # type: ignore
    with pytest.raises(DicomwebFailed) as caught:
        await _retrieve(port, study, limits)
    assert cause in str(caught.value)
    assert not caught.value.transient


async def test_wado_outage_is_transient(pacs: tuple[Pacs, int]) -> None:
    server, port = pacs
    study = generate_uid()
    server.answers[f"/studies/{study}"] = (502, "text/plain", [b"bad gateway"])
    with pytest.raises(DicomwebFailed, match="HTTP 502") as caught:
        await _retrieve(port, study)
    assert caught.value.transient


def test_the_multipart_reader_frames_parts_exactly() -> None:
    data = [b"\r\n--not-the-boundary\r\n", b"", b"x" * 3000]
    body = (b"--B\r\nContent-Type: a/b\r\n\r\n" + data[0] + b"\r\n--B\r\n\r\n" + data[1]
            + b"\r\n--B  \r\nX-A: 1\r\n\r\n" + data[2] + b"\r\n--B--epilogue")
    for step in (1, 2, 5, len(body)):
        reader = MultipartReader("B", Limits())
        parts = [p for i in range(0, len(body), step) for p in reader.feed(body[i:i + step])]
        reader.close()
        assert [d for _, d in parts] == data
        assert parts[0][0] == {"content-type": "a/b"} and parts[2][0] == {"x-a": "1"}


@pytest.mark.parametrize(("value", "problem"), [
    ("Bearer abc.def-123_~+/==", None),
    ("Basic dXNlcjpwYXNz", None),  # user:pass
    ("basic dXNlcjpwYXNz", None),
    ("Token abc", 'either "Bearer TOKEN" or "Basic BASE64"'),
    ("Bearer", 'either "Bearer TOKEN"'),
    ("Bearer a b", "one token"),
    ("Bearer abc\r\nX-Evil: 1", "one token"),
    ("Basic bm9jb2xvbg==", "no ':' found"),  # "nocolon"
    ("Basic !!!", "one token"),
    ("Basic abc", "base64 of user:password"),
    ("Bearer " + "a" * 5000, "at most 4096"),
])
def test_authorization_values(value: str, problem: str | None) -> None:
    found = authorization_problem(value)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found
