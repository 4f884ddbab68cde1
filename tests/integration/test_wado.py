"""WADO-RS through the real gateway app and the ingest service's RetrieveService, driven by
dicomweb-client: retrieve, metadata, bulk data, frames (native, compressed, multi-frame),
rendered, and the bad-input cases."""

from __future__ import annotations

import asyncio
import io
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
import requests
import uvicorn
from dicomweb_client.api import DICOMwebClient
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from protos.sidecar.ingest.v1 import ingest_service_pb2 as ipb
from protos.sidecar.ingest.v1 import ingest_service_pb2_grpc as ipb_grpc
from review_gateway.app import create_app
from review_gateway.auth import tokens
from review_gateway.settings import GatewaySettings
from sidecar_core.db import Database
from sidecar_core.messaging.subjects import Topology
from sidecar_core.serving.grpc_server import GrpcServer
from tests import pki as test_pki
from tests.helpers import add_facility, ct_slice, to_bytes
from tests.integration.test_dimse import running_ingest
from tests.servers import free_port, wait_port
from workflow_svc.review import servicer as review_servicer

pytestmark = pytest.mark.integration

SECRET = "wado-tests-signing-secret-0123456789abcdef"
# pydicom's test files, re-homed into one study (each keeps its own transfer syntax)
JPEG2000 = "JPEG2000.dcm"  # JPEG 2000, 1 frame
JPEG_BASELINE = "SC_rgb_jpeg_gdcm.dcm"  # JPEG baseline, RGB
RLE_2FRAME = "SC_rgb_rle_2frame.dcm"  # RLE, 2 frames
MULTIFRAME = "rtdose.dcm"  # implicit VR LE, 15 frames
JPEG_LS = "MR_small_jpeg_ls_lossless.dcm"
SR = "test-SR.dcm"  # no pixel data
TEST_FILES = (JPEG2000, JPEG_BASELINE, RLE_2FRAME, MULTIFRAME, JPEG_LS, SR)


@dataclass
class Corpus:
    study: str = field(default_factory=generate_uid)
    other_study: str = field(default_factory=generate_uid)  # facility "south"
    second_study: str = field(default_factory=generate_uid)  # north, another patient
    ct_series: str = field(default_factory=generate_uid)
    ct: list[Dataset] = field(default_factory=list)
    files: dict[str, Dataset] = field(default_factory=dict)  # test file name -> re-homed copy

    def ref(self, name: str) -> tuple[str, str, str]:
        ds = self.files[name]
        return self.study, ds.SeriesInstanceUID, ds.SOPInstanceUID


def _rehome(name: str, study: str) -> Dataset:
    ds = pydicom.dcmread(get_testdata_file(name))
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, generate_uid()
    sop = generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = sop
    ds.AccessionNumber, ds.PatientID, ds.PatientName = "WADO-1", "PAT-1", "Doe^Jane"
    return ds


def _corpus() -> Corpus:
    c = Corpus()
    for i in range(3):
        ds = ct_slice(c.study, c.ct_series, z=float(i), accession="WADO-1", rows=32, cols=32)
        ds.InstanceNumber, ds.SeriesNumber = i + 1, 1
        ds.PatientID, ds.PatientName = "PAT-1", "Doe^Jane"
        ds.PixelData = (np.arange(32 * 32, dtype=np.uint16) * (i + 1)).tobytes()
        ds.WindowCenter, ds.WindowWidth = 40, 400
        c.ct.append(ds)
    c.files = {name: _rehome(name, c.study) for name in TEST_FILES}
    return c


def _second(c: Corpus) -> Dataset:
    ds = ct_slice(c.second_study, accession="WADO-2")
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName, ds.PatientID = "Müller^Jürgen=ミュラー^ユルゲン", "PAT-2"
    ds.PatientBirthDate, ds.PatientSex, ds.ReferringPhysicianName = "19600101", "M", "Ref^Doc"
    ds.StudyDate, ds.StudyDescription, ds.Modality = "20200101", "MR Brain", "MR"
    return ds


@dataclass
class Wado:
    url: str
    corpus: Corpus
    grpc_port: int = 0
    database_url: str = ""

    def token(self, facilities: tuple[str, ...] = ("north",)) -> str:
        return tokens.issue(SECRET.encode(), user_id="u1", username="rad", role="radiologist",
                          facilities=list(facilities), ttl_s=3600)

    def client(self, facilities: tuple[str, ...] = ("north",)) -> DICOMwebClient:
        return DICOMwebClient(self.url, headers={"Authorization": f"Bearer "
                                                               f"{self.token(facilities)}"})

    def get(self, path: str, accept: str = "", **headers: str) -> requests.Response:
        hdrs = {"Authorization": f"Bearer {self.token()}", **headers}
        if accept:
            hdrs["Accept"] = accept
        return requests.get(self.url + path, headers=hdrs, timeout=60)


@contextmanager
def serve(app: Any) -> Iterator[str]:
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


@pytest.fixture()
async def wado(database_url: str, nats: Any, tmp_path: Path) -> AsyncIterator[Wado]:
    for name in ("north", "south"):
        add_facility(database_url, name, quiet_period_s=60)
    corpus = _corpus()
    async with running_ingest(database_url, nats, tmp_path, dicom_port=0,
                              token_secret=SECRET) as svc:

        async with test_pki.aio_channel(f"127.0.0.1:{svc.grpc_port}", "operator") as channel:
            stub = ipb_grpc.IngestServiceStub(channel)
            for facility, datasets in (
                    ("north", [*corpus.ct, *corpus.files.values(), _second(corpus)]),
                    ("south", [ct_slice(corpus.other_study, accession="S-1")])):
                reply = await stub.IngestInstances(ipb.IngestInstancesRequest(
                    facility=facility,
                    items=[ipb.IngestInstancesRequestItem(dicom=to_bytes(d)) for d in datasets]))
                assert [r.reason for r in reply.results] == [""] * len(datasets)
        # The gateway asks the workflow process (ReviewService) whether a session was revoked.
        db = Database(database_url)
        workflow = GrpcServer("127.0.0.1:0", test_pki.service("workflow"))
        review_servicer.register(workflow, db, Topology())
        workflow_port = await workflow.start()
        test_pki.install(tmp_path)
        settings = GatewaySettings(data_dir=tmp_path, token_secret=SECRET,
                                   ingest_address=f"127.0.0.1:{svc.grpc_port}",
                                   workflow_address=f"127.0.0.1:{workflow_port}",
                                   cors_origins="http://viewer.test")
        try:
            with serve(create_app(settings)) as url:
                yield Wado(url + "/dicomweb", corpus, svc.grpc_port, database_url)
        finally:
            await workflow.stop(0)
            await db.close()


def _in_thread(fn: Any, *args: Any, **kwargs: Any) -> Any:
    return asyncio.to_thread(fn, *args, **kwargs)


async def test_metadata_bulk_data_and_etag(wado: Wado) -> None:
    c, client = wado.corpus, wado.client()
    metadata = await _in_thread(client.retrieve_series_metadata, c.study, c.ct_series)
    assert [m["00200013"]["Value"][0] for m in metadata] == [1, 2, 3]
    first = metadata[0]
    for tag in ("00080016", "00080018", "00080060", "00280010", "00280011", "00280004",
                "00280100", "00280101", "00280102", "00280002", "00280030", "00281050",
                "00281051", "00200032", "00200037", "00100010"):
        assert tag in first, tag
    assert first["00100010"]["Value"] == [{"Alphabetic": "Doe^Jane"}]
    uri = first["7FE00010"]["BulkDataURI"]
    assert uri.startswith(wado.url + "/studies/")
    data = await _in_thread(client.retrieve_bulkdata, uri)
    assert data[0] == c.ct[0].PixelData
    study_metadata = await _in_thread(client.retrieve_study_metadata, c.study)
    assert len(study_metadata) == 3 + len(TEST_FILES)
    one = await _in_thread(client.retrieve_instance_metadata, *c.ref(JPEG2000))
    assert one["00080018"]["Value"] == [c.files[JPEG2000].SOPInstanceUID]
    assert one["00083002"]["Value"] == [c.files[JPEG2000].file_meta.TransferSyntaxUID]
    path = f"/studies/{c.study}/series/{c.ct_series}/metadata"
    reply = await _in_thread(wado.get, path)
    etag = reply.headers["ETag"]
    again = await _in_thread(wado.get, path, **{"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""


async def test_retrieve_instances_as_stored_and_transcoded(wado: Wado) -> None:
    c, client = wado.corpus, wado.client()
    series = await _in_thread(client.retrieve_series, c.study, c.ct_series)
    assert [ds.SOPInstanceUID for ds in series] == [ds.SOPInstanceUID for ds in c.ct]
    study = await _in_thread(client.retrieve_study, c.study,
                             media_types=(("application/dicom", "*"),))
    assert len(study) == 3 + len(TEST_FILES)
    jpeg = c.files[JPEG_BASELINE]
    as_stored = await _in_thread(client.retrieve_instance, *c.ref(JPEG_BASELINE),
                                 media_types=(("application/dicom", "*"),))
    assert as_stored.file_meta.TransferSyntaxUID == jpeg.file_meta.TransferSyntaxUID
    assert as_stored.PixelData == jpeg.PixelData
    plain = await _in_thread(client.retrieve_instance, *c.ref(JPEG_BASELINE),
                             media_types=(("application/dicom", ExplicitVRLittleEndian),))
    assert plain.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert plain.PhotometricInterpretation == "RGB"
    assert np.array_equal(plain.pixel_array, jpeg.pixel_array)
    rle = await _in_thread(client.retrieve_instance, *c.ref(RLE_2FRAME),  # no syntax named:
                           media_types=(("application/dicom",),))  # explicit VR LE
    assert rle.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert np.array_equal(rle.pixel_array, c.files[RLE_2FRAME].pixel_array)


async def test_frames_native_compressed_and_multiframe(wado: Wado) -> None:
    c, client = wado.corpus, wado.client()
    ct = c.ct[1]
    frames = await _in_thread(client.retrieve_instance_frames, c.study, c.ct_series,
                              ct.SOPInstanceUID, [1])
    assert frames == [ct.PixelData]
    dose = c.files[MULTIFRAME]
    size = dose.Rows * dose.Columns * dose.BitsAllocated // 8
    frames = await _in_thread(client.retrieve_instance_frames, *c.ref(MULTIFRAME), [2, 15])
    assert frames == [dose.PixelData[size:2 * size], dose.PixelData[14 * size:15 * size]]
    rle = c.files[RLE_2FRAME]
    stored = list(generate_frames(rle.PixelData, number_of_frames=2))
    frames = await _in_thread(client.retrieve_instance_frames, *c.ref(RLE_2FRAME), [2, 1],
                              media_types=(("application/octet-stream", "*"),))
    assert frames == [stored[1], stored[0]]
    j2k = c.files[JPEG2000]
    reply = await _in_thread(
        wado.get, "/studies/{}/series/{}/instances/{}/frames/1".format(*c.ref(JPEG2000)),
        'multipart/related; type="application/octet-stream"; transfer-syntax=*')
    assert reply.status_code == 200
    assert f"transfer-syntax={j2k.file_meta.TransferSyntaxUID}" in reply.text[:300]
    frames = await _in_thread(client.retrieve_instance_frames, *c.ref(JPEG2000), [1],
                              media_types=(("application/octet-stream", "*"),))
    assert frames == [next(generate_frames(j2k.PixelData, number_of_frames=1))]
    decoded = await _in_thread(client.retrieve_instance_frames, *c.ref(JPEG_LS), [1],
                               media_types=(("application/octet-stream",
                                             ExplicitVRLittleEndian),))
    assert decoded == [c.files[JPEG_LS].pixel_array.astype("<u2").tobytes()]


async def test_rendered_and_thumbnails(wado: Wado) -> None:
    c, client = wado.corpus, wado.client()
    jpeg = await _in_thread(client.retrieve_instance_rendered, c.study, c.ct_series,
                            c.ct[0].SOPInstanceUID, media_types=("image/jpeg",),
                            params={"window": "100,500,linear", "viewport": "64,64"})
    image = Image.open(io.BytesIO(jpeg))
    assert image.format == "JPEG" and image.size == (64, 64)
    png = await _in_thread(client.retrieve_instance_frames_rendered, *c.ref(MULTIFRAME), [3],
                           media_types=("image/png",))
    assert Image.open(io.BytesIO(png)).size == (c.files[MULTIFRAME].Columns,
                                                 c.files[MULTIFRAME].Rows)
    for path in (f"/studies/{c.study}/thumbnail", f"/studies/{c.study}/rendered",
                 f"/studies/{c.study}/series/{c.ct_series}/thumbnail",
                 "/studies/{}/series/{}/instances/{}/thumbnail".format(*c.ref(JPEG_BASELINE)),
                 "/studies/{}/series/{}/instances/{}/frames/2/rendered".format(
                     *c.ref(RLE_2FRAME))):
        reply = await _in_thread(wado.get, path, "image/jpeg")
        assert reply.status_code == 200, (path, reply.text)
        assert Image.open(io.BytesIO(reply.content)).format == "JPEG"
    thumb = await _in_thread(wado.get, f"/studies/{c.study}/series/{c.ct_series}/thumbnail")
    assert max(Image.open(io.BytesIO(thumb.content)).size) <= 128


async def test_qido_answers_ohifs_queries(wado: Wado) -> None:
    c = wado.corpus
    ohif = ("/studies?limit=101&offset=0&fuzzymatching={fuzzy}"
            "&includefield=00081030%2C00080060%2C00080090%2C00100030{filters}")

    async def studies(fuzzy: str = "false", **filters: str) -> list[dict[str, Any]]:
        query = "".join(f"&{k}={v}" for k, v in filters.items())
        reply = await _in_thread(wado.get, ohif.format(fuzzy=fuzzy, filters=query),
                                 "application/dicom+json")
        assert reply.status_code == 200, reply.text
        return reply.json()  # type: ignore[no-any-return]

    def uids(found: list[dict[str, Any]]) -> list[str]:
        return sorted(s["0020000D"]["Value"][0] for s in found)

    both = sorted([c.study, c.second_study])
    assert uids(await studies()) == both
    second = next(s for s in await studies() if s["0020000D"]["Value"] == [c.second_study])
    assert second["00100010"]["Value"] == [{"Alphabetic": "Müller^Jürgen",
                                            "Ideographic": "ミュラー^ユルゲン"}]
    assert second["00100020"]["Value"] == ["PAT-2"]
    assert second["00100030"]["Value"] == ["19600101"]
    assert second["00080090"]["Value"] == [{"Alphabetic": "Ref^Doc"}]
    assert second["00081030"]["Value"] == ["MR Brain"]
    assert second["00080061"]["Value"] == ["MR"]
    assert uids(await studies(PatientName="Doe^Jane")) == [c.study]
    assert uids(await studies(PatientName="doe*")) == [c.study]  # names: case-insensitive
    assert uids(await studies(PatientName="jane")) == []
    assert uids(await studies("true", PatientName="jane")) == [c.study]  # fuzzy: a component
    assert uids(await studies("true", PatientName="jür")) == [c.second_study]
    assert uids(await studies(PatientName="ミュラー*")) == [c.second_study]  # ideographic
    assert uids(await studies(**{"00100020": "PAT-?"})) == both
    assert uids(await studies(**{"00100020": "PAT-2"})) == [c.second_study]
    assert uids(await studies(AccessionNumber="WADO-1")) == [c.study]
    assert uids(await studies(StudyDescription="MR*")) == [c.second_study]
    assert uids(await studies(ModalitiesInStudy="RTDOSE")) == [c.study]
    assert uids(await studies(StudyDate="20190101-20201231")) == [c.second_study]
    assert uids(await studies(PatientBirthDate="-19650101")) == [c.second_study]
    assert uids(await studies(StudyInstanceUID=f"{c.study}\\{c.second_study}")) == both
    series = await _in_thread(
        wado.get, f"/studies/{c.second_study}/series?includefield=0008103E,00080021")
    assert len(series.json()) == 1 and series.json()[0]["00080060"]["Value"] == ["MR"]
    everything = await _in_thread(wado.get, f"/studies?includefield=all&"
                                             f"StudyInstanceUID={c.second_study}")
    assert everything.json()[0]["00100040"]["Value"] == ["M"]  # PatientSex


async def test_bad_input(wado: Wado, tmp_path: Path) -> None:
    c = wado.corpus
    unknown = generate_uid()
    sr = "/studies/{}/series/{}/instances/{}".format(*c.ref(SR))
    ct = f"/studies/{c.study}/series/{c.ct_series}/instances/{c.ct[0].SOPInstanceUID}"
    other = f"/studies/{c.other_study}"
    cases: list[tuple[str, str, int, str]] = [
        (f"/studies/{unknown}", "", 404, "NOT_FOUND"),
        (f"/studies/{unknown}/metadata", "", 404, "NOT_FOUND"),
        (f"/studies/{c.study}/series/{unknown}/metadata", "", 404, "NOT_FOUND"),
        (f"/studies/{c.study}/series/{c.ct_series}/instances/{unknown}/frames/1", "", 404,
         "NOT_FOUND"),
        (other, "", 404, "NOT_FOUND"),
        (other + "/metadata", "", 404, "NOT_FOUND"),
        (other + "/rendered", "", 404, "NOT_FOUND"),
        (other + "/thumbnail", "", 404, "NOT_FOUND"),
        (ct + "/frames/2", "", 404, "FRAME_NOT_FOUND"),
        (ct + "/frames/0", "", 400, "INVALID_FRAME_LIST"),
        (ct + "/frames/1,x", "", 400, "INVALID_FRAME_LIST"),
        (sr + "/frames/1", "", 400, "NO_PIXEL_DATA"),
        (sr + "/rendered", "", 400, "NO_PIXEL_DATA"),
        (ct + "/bulkdata/7FE00011", "", 404, "NO_SUCH_BULK_DATA"),
        (ct + "/bulkdata/zz", "", 400, "INVALID_TAG"),
        (ct + "/rendered", "image/gif", 406, "NOT_ACCEPTABLE"),
        (ct + "/metadata", "application/xml", 406, "NOT_ACCEPTABLE"),
        (ct, 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50',
         406, "NOT_ACCEPTABLE"),
        (ct + "/frames/1", 'multipart/related; type="image/jp2"', 406, "NOT_ACCEPTABLE"),
        (ct + "/rendered?window=1,x", "", 400, "INVALID_WINDOW"),
        (ct + "/rendered?viewport=0,10", "", 400, "INVALID_VIEWPORT"),
        ("/studies/1.2.03/metadata", "", 400, "INVALID_UID"),
    ]
    for path, accept, status, reason in cases:
        reply = await _in_thread(wado.get, path, accept)
        assert (reply.status_code, reply.json()["error"]["reason"]) == (status, reason), path
        message = reply.json()["error"]["message"]
        assert str(tmp_path) not in message and "Traceback" not in message
    # the other facility's study, through every resource an instance has
    south = wado.client(("south",))
    found = await _in_thread(south.search_for_series, c.other_study)
    series = found[0]["0020000E"]["Value"][0]
    instances = await _in_thread(south.search_for_instances, c.other_study, series)
    sop = instances[0]["00080018"]["Value"][0]
    base = f"/studies/{c.other_study}/series/{series}/instances/{sop}"
    for suffix in ("", "/metadata", "/frames/1", "/rendered", "/thumbnail",
                   "/bulkdata/7FE00010", "/frames/1/rendered"):
        reply = await _in_thread(wado.get, base + suffix)
        assert reply.status_code == 404, suffix
    no_token = await _in_thread(requests.get, wado.url + ct + "/metadata", timeout=30)
    assert no_token.status_code == 401


async def test_cors_and_no_token_in_the_url(wado: Wado) -> None:
    c = wado.corpus
    path = f"{wado.url}/studies/{c.study}/series/{c.ct_series}/metadata"
    preflight = await _in_thread(requests.options, path, timeout=30, headers={
        "Origin": "http://viewer.test", "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization,accept"})
    assert preflight.status_code == 200
    assert preflight.headers["Access-Control-Allow-Origin"] == "http://viewer.test"
    assert "Authorization" in preflight.headers["Access-Control-Allow-Headers"]
    other = await _in_thread(requests.options, path, timeout=30, headers={
        "Origin": "http://evil.test", "Access-Control-Request-Method": "GET"})
    assert "Access-Control-Allow-Origin" not in other.headers
    # A token in the URL is no credential (the viewer gets its own through the hand-over).
    in_url = await _in_thread(requests.get, f"{path}?token={wado.token()}", timeout=30,
                              headers={"Origin": "http://viewer.test"})
    assert in_url.status_code == 401
    reply = await _in_thread(requests.get, path, timeout=30, headers={
        "Origin": "http://viewer.test", "Authorization": f"Bearer {wado.token()}"})
    assert reply.status_code == 200
    assert reply.headers["Access-Control-Allow-Origin"] == "http://viewer.test"
    assert "ETag" in reply.headers["Access-Control-Expose-Headers"]


async def test_series_indexes_are_built_when_a_study_completes(wado: Wado) -> None:
    import psycopg

    c = wado.corpus
    query = ("SELECT count(*) FROM dicomweb_series_index x JOIN series se ON se.id = x.series_id "
             "JOIN studies s ON s.id = se.study_id WHERE s.study_instance_uid = %s "
             "AND x.instance_count = se.instance_count")

    def indexed() -> int:
        with psycopg.connect(wado.database_url) as conn:
            return int(conn.execute(query, (c.study,)).fetchone()[0])  # type: ignore[index]

    assert indexed() == 0  # nothing asked for it, the study is still receiving
    async with test_pki.aio_channel(f"127.0.0.1:{wado.grpc_port}", "operator") as channel:
        await ipb_grpc.IngestServiceStub(channel).CompleteStudy(ipb.CompleteStudyRequest(
            facility="north", study_instance_uid=c.study))
    for _ in range(300):
        if indexed() == 1 + len(TEST_FILES):
            break
        await asyncio.sleep(0.1)
    assert indexed() == 1 + len(TEST_FILES)
