"""STOW-RS and QIDO-RS via the router (uvicorn) and the Ingest RPC, driven by dicomweb-client."""

from __future__ import annotations

import asyncio
import io
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pydicom
import pytest
import requests
import uvicorn
from dicomweb_client.api import DICOMwebClient
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from protos.sidecar.ingest.v1 import ingest_service_pb2_grpc as pb_grpc
from review_gateway.auth import forwarding, tokens
from review_gateway.dicomweb.router import StowLimits, dicomweb_router
from review_gateway.dicomweb.stow import split_multipart, split_request
from review_gateway.errors import ApiError
from tests import pki as test_pki
from tests.helpers import add_facility, ct_slice, to_bytes
from tests.integration.test_dimse import Ingest, running_ingest
from tests.servers import free_port, wait_port

KEY = b"test-signing-key-for-dicomweb-tests"
# a few instances of two studies and two facilities
STUDY_A, STUDY_B, STUDY_OTHER = generate_uid(), generate_uid(), generate_uid()


def token(role: str = "radiologist", facilities: tuple[str, ...] = ("north",)) -> str:
    return tokens.issue(KEY, user_id="u1", username="tester", role=role,
                      facilities=list(facilities), ttl_s=3600)


async def principal(request: Request) -> tokens.Principal:
    me = tokens.verify(KEY, tokens.bearer_token(request.headers.get("Authorization")))
    forwarding.forward(me)  # as the gateway's SessionAuth does: ingest verifies it again
    return me


@dataclass
class Web:
    url: str
    ingest: Ingest

    def client(self, role: str = "radiologist",
               facilities: tuple[str, ...] = ("north",)) -> DICOMwebClient:
        return DICOMwebClient(self.url, headers={"Authorization": f"Bearer "
                                                               f"{token(role, facilities)}"})


@contextmanager
def serve(app: FastAPI) -> Iterator[str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_port(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def make_app(grpc_port: int, limits: StowLimits | None = None) -> FastAPI:
    """A minimal app with the gateway's bearer auth; the real gateway mounts the same router."""
    app = FastAPI()
    channel: list[grpc.aio.Channel] = []

    def stub() -> pb_grpc.IngestServiceStub:  # created lazily inside uvicorn's event loop
        if not channel:
            channel.append(forwarding.channel(test_pki.service("gateway"),
                                              f"127.0.0.1:{grpc_port}"))
        return pb_grpc.IngestServiceStub(channel[0])

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    app.include_router(dicomweb_router(principal, stub, limits=limits or StowLimits(
        max_request_bytes=8 * 1024 * 1024)), prefix="/dicomweb")
    return app


@pytest.fixture()
async def web(database_url: str, nats: Any, tmp_path: Path) -> AsyncIterator[Web]:
    for name in ("north", "south"):
        add_facility(database_url, name)
    async with running_ingest(database_url, nats, tmp_path, dicom_port=0,
                              token_secret=KEY.decode()) as svc:
        with serve(make_app(svc.grpc_port)) as url:
            yield Web(url + "/dicomweb", svc)


def instance(study: str, series: str, z: float, *, date: str = "20240305",
             accession: str = "ACC1", modality: str = "CT") -> Dataset:
    ds = ct_slice(study, series, z=z, accession=accession)
    ds.StudyDate, ds.StudyTime, ds.Modality = date, "101500", modality
    ds.InstanceNumber, ds.SeriesNumber, ds.StudyDescription = int(z) + 1, 1, "CHEST"
    return ds


def multipart(parts: list[bytes], boundary: str = "b0undary") -> tuple[dict[str, str], bytes]:
    body = b"".join(b"\r\n--" + boundary.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n"
                    + p for p in parts) + b"\r\n--" + boundary.encode() + b"--"
    ctype = f'multipart/related; type="application/dicom"; boundary={boundary}'
    return {"Content-Type": ctype}, body


def test_multipart_parsing_edge_cases() -> None:
    headers, body = multipart([b"one", b"two\r\n"])
    assert split_request(headers["Content-Type"], body) == [b"one", b"two\r\n"]
    assert split_multipart(b"--x\r\n\r\nA\r\n--x--\r\n", b"x") == [({}, b"A")]


@pytest.mark.integration
async def test_stow_all_some_and_none_stored(web: Web) -> None:
    series = generate_uid()
    good = [instance(STUDY_A, series, z) for z in (0.0, 1.0, 2.0)]
    reply = await asyncio.to_thread(web.client().store_instances, good)
    refs = reply.ReferencedSOPSequence
    assert [r.ReferencedSOPInstanceUID for r in refs] == [d.SOPInstanceUID for d in good]
    assert refs[0].RetrieveURL.endswith(
        f"/dicomweb/studies/{STUDY_A}/series/{series}/instances/{good[0].SOPInstanceUID}")
    assert reply.RetrieveURL.endswith(f"/dicomweb/studies/{STUDY_A}")
    assert "FailedSOPSequence" not in reply

    bad = instance(STUDY_A, series, 3.0)
    del bad.StudyInstanceUID
    h = {"Authorization": f"Bearer {token()}"}
    async with httpx.AsyncClient(timeout=60) as http:
        headers, body = multipart([to_bytes(good[0]), to_bytes(bad)])  # a duplicate, a failure
        some = await http.post(f"{web.url}/studies", headers={**h, **headers}, content=body)
        assert some.status_code == 202
        assert some.headers["content-type"].startswith("application/dicom+json")
        failed = some.json()["00081198"]["Value"]
        assert [f["00081197"]["Value"] for f in failed] == [[0xA900]]
        assert failed[0]["00081155"]["Value"] == [bad.SOPInstanceUID]

        headers, body = multipart([b"not dicom" * 50])
        none = await http.post(f"{web.url}/studies", headers={**h, **headers}, content=body)
        assert none.status_code == 409
        assert none.json()["00081198"]["Value"][0]["00081197"]["Value"] == [0xC000]

        other = instance(STUDY_OTHER, generate_uid(), 0.0)
        headers, body = multipart([to_bytes(other), to_bytes(instance(STUDY_A, series, 4.0))])
        target = await http.post(f"{web.url}/studies/{STUDY_A}", headers={**h, **headers},
                                 content=body)
        assert target.status_code == 202  # the other study's instance is refused, 0xA900
        assert target.json()["00081198"]["Value"][0]["00081197"]["Value"] == [0xA900]

        wrong_type = await http.post(f"{web.url}/studies", content=to_bytes(other),
                                     headers={**h, "Content-Type": "application/dicom"})
        assert wrong_type.status_code == 415
        json_parts = await http.post(f"{web.url}/studies", content=b"--x--", headers={
            **h, "Content-Type": 'multipart/related; type="application/dicom+json"; boundary=x'})
        assert json_parts.status_code == 415
        malformed = await http.post(f"{web.url}/studies", content=b"no boundary here", headers={
            **h, "Content-Type": 'multipart/related; type="application/dicom"; boundary=zz'})
        assert malformed.status_code == 400
        anonymous = await http.post(f"{web.url}/studies", content=body, headers=headers)
        assert anonymous.status_code == 401
        auditor = await http.post(f"{web.url}/studies", content=body, headers={
            **headers, "Authorization": f"Bearer {token('auditor', ())}"})
        assert auditor.status_code == 403
        too_big = await http.post(f"{web.url}/studies", content=b"x" * (9 * 1024 * 1024),
                                  headers={**h, **headers})
        assert too_big.status_code == 413
    rows = web.ingest.rows("select count(*), min(source) from instances")
    assert rows == [(4, "grpc")]


@pytest.mark.integration
async def test_stow_streams_parts_to_spools_fails_an_oversized_one_and_cuts_at_the_limit(
        web: Web, tmp_path: Path) -> None:
    series = generate_uid()
    small = [to_bytes(instance(STUDY_A, series, z)) for z in (10.0, 11.0, 12.0)]
    big = instance(STUDY_A, series, 13.0)
    big.Rows = big.Columns = 256  # 128 KiB of pixels: over the part limit below
    big.PixelData = b"\x00\x04" * 256 * 256
    limits = StowLimits(max_request_bytes=400_000, max_part_bytes=100_000,
                        spool_dir=tmp_path / "spool", in_memory_bytes=1024)
    h = {"Authorization": f"Bearer {token()}"}
    with serve(make_app(web.ingest.grpc_port, limits)) as url:
        async with httpx.AsyncClient(timeout=60) as http:
            headers, body = multipart([small[0], to_bytes(big), small[1]])
            some = await http.post(f"{url}/dicomweb/studies", headers={**h, **headers},
                                   content=trickle_of(body, 4099))  # chunked, odd pieces
            assert some.status_code == 202, some.text
            failed = some.json()["00081198"]["Value"]
            assert [f["00081197"]["Value"] for f in failed] == [[0xA700]]
            assert failed[0]["00081155"]["Value"] == [big.SOPInstanceUID]  # from its head
            assert len(some.json()["00081199"]["Value"]) == 2
            # Past the request limit: what came before the cut is stored and reported.
            headers, body = multipart([small[2], b"\xa5" * 600_000])
            cut = await http.post(f"{url}/dicomweb/studies", headers={**h, **headers},
                                  content=trickle_of(body))
            assert cut.status_code == 413, cut.text
            assert "SIDECAR_MAX_STOW_BYTES" in cut.headers["warning"]
            assert cut.json()["00081199"]["Value"][0]["00081155"]["Value"] == [
                pydicom.dcmread(io.BytesIO(small[2])).SOPInstanceUID]
    assert list((tmp_path / "spool").iterdir()) == []
    rows = web.ingest.rows("select count(*) from instances")
    assert rows == [(3,)]


async def trickle_of(body: bytes, size: int = 65536) -> AsyncIterator[bytes]:
    for i in range(0, len(body), size):
        yield body[i:i + size]


@pytest.mark.integration
async def test_qido_studies_series_instances_with_dicomweb_client(web: Web) -> None:
    north, south = web.client(), web.client(facilities=("south",))
    series_a, series_b = generate_uid(), generate_uid()
    await asyncio.to_thread(north.store_instances,
                            [instance(STUDY_A, series_a, z) for z in range(3)])
    await asyncio.to_thread(north.store_instances, [
        instance(STUDY_B, series_b, 0.0, date="20230101", accession="ACC2", modality="MR")])
    await asyncio.to_thread(south.store_instances, [instance(STUDY_OTHER, generate_uid(), 0.0)])

    studies = await asyncio.to_thread(north.search_for_studies)
    assert {s["0020000D"]["Value"][0] for s in studies} == {STUDY_A, STUDY_B}
    a = next(s for s in studies if s["0020000D"]["Value"] == [STUDY_A])
    assert a["00201208"]["Value"] == [3] and a["00080061"]["Value"] == ["CT"]
    assert a["00080020"]["Value"] == ["20240305"] and a["00080050"]["Value"] == ["ACC1"]

    def find(**kw: Any) -> list[str]:
        found = north.search_for_studies(**kw)
        return sorted(s["0020000D"]["Value"][0] for s in found)

    assert await asyncio.to_thread(find, search_filters={"StudyDate": "20240101-"}) == [STUDY_A]
    assert await asyncio.to_thread(find, search_filters={"ModalitiesInStudy": "MR"}) == [STUDY_B]
    assert await asyncio.to_thread(find, search_filters={"AccessionNumber": "ACC*"}) == sorted(
        [STUDY_A, STUDY_B])
    assert await asyncio.to_thread(find, search_filters={"00080050": "ACC2"}) == [STUDY_B]
    assert len(await asyncio.to_thread(find, limit=1)) == 1
    assert len(await asyncio.to_thread(find, limit=1, offset=1)) == 1
    assert await asyncio.to_thread(find, offset=2) == []

    series = await asyncio.to_thread(north.search_for_series, STUDY_A)
    assert [s["0020000E"]["Value"] for s in series] == [[series_a]]
    assert series[0]["00201209"]["Value"] == [3]
    found = await asyncio.to_thread(north.search_for_instances, STUDY_A, series_a,
                                    fields=["ImagePositionPatient"])
    assert [i["00200013"]["Value"] for i in found] == [[1], [2], [3]]
    assert found[2]["00200032"]["Value"] == [0.0, 0.0, 2.0]
    everywhere = await asyncio.to_thread(north.search_for_instances)
    assert len(everywhere) == 4
    mr = await asyncio.to_thread(north.search_for_series, search_filters={"Modality": "MR"})
    assert [s["0020000D"]["Value"] for s in mr] == [[STUDY_B]]

    assert [s["0020000D"]["Value"][0] for s in
            await asyncio.to_thread(south.search_for_studies)] == [STUDY_OTHER]
    admin = web.client("admin", ())
    assert len(await asyncio.to_thread(admin.search_for_studies)) == 3

    assert await asyncio.to_thread(find, search_filters={"PatientID": "X"}) == []
    assert await asyncio.to_thread(find, search_filters={"PatientID": "SYNTH-1"}) == sorted(
        [STUDY_A, STUDY_B])
    with pytest.raises(requests.HTTPError) as refused:
        await asyncio.to_thread(north.search_for_studies, search_filters={"PatientWeight": "7"})
    assert refused.value.response.status_code == 400
    assert "matching on PatientWeight is not supported" in refused.value.response.text
