"""Decode on arrival (issue 22 item 1) through `sidecar up`: the model input the preprocess job
builds from instances decoded while the study arrived is the one built without them, and a
preprocess process killed while the study arrives (its decoded instances lost) or while the job
runs loses nothing: the job reads what its cache lacks and the study is done exactly once."""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pydicom
from prometheus_client.parser import text_string_to_metric_families

from protos.sidecar.ingest.v1 import ingest_service_pb2 as ingest_pb
from protos.sidecar.ingest.v1 import ingest_service_pb2_grpc as ingest_grpc
from sidecar_core.pixels.volume import build_model_input, save_model_input
from tests.faults.harness import CHEST, Faulty, Sent


def early_decode(up: Faulty, outcome: str) -> float:
    """The preprocess process's sidecar_early_decode_instances counter (0 after a restart)."""
    try:
        text = httpx.get(f"http://127.0.0.1:{up.stack.ports['preprocess-metrics']}/metrics",
                         timeout=10).text
    except httpx.HTTPError:
        return -1.0
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == "sidecar_early_decode_instances_total"
               and s.labels.get("outcome") == outcome)


def expected_model_input_sha256(folder: Path) -> str:
    """The model input of the folder's series built the plain way (read, decode, stack)."""
    datasets = [pydicom.dcmread(p) for p in sorted(folder.glob("*.dcm"))]
    assert len(datasets) == CHEST["slices"]
    return hashlib.sha256(save_model_input(build_model_input(datasets), compress_level=0)
                          ).hexdigest()


def stored_model_input_sha256(up: Faulty, sent: Sent) -> str:
    [row] = up.rows("select sha256 from assets where study_id = %(id)s and kind = 'model_input'",
                    id=sent.study_id)
    return str(row["sha256"])


def complete(up: Faulty, sent: Sent) -> None:
    with up.stack.channel("ingest") as channel:
        ingest_grpc.IngestServiceStub(channel).CompleteStudy(ingest_pb.CompleteStudyRequest(
            facility="acc_north", study_instance_uid=sent.study_instance_uid), timeout=60)


def test_the_model_input_built_on_arrival_is_the_one_built_without(up: Faulty,
                                                                   tmp_path: Path) -> None:
    slices = CHEST["slices"]
    decoded, hits = early_decode(up, "decoded"), early_decode(up, "hit")
    sent = up.send("acc_north", up.chest(tmp_path, seed=41), complete=False)
    up.wait(lambda: early_decode(up, "decoded") >= decoded + slices,
            "every instance decoded on arrival", 120)
    complete(up, sent)
    assert up.wait_final(sent.study_id) == "ready_for_review"
    up.assert_exactly_once([sent.study_id])
    assert early_decode(up, "hit") == hits + slices, "the job took every instance decoded"
    assert stored_model_input_sha256(up, sent) == expected_model_input_sha256(sent.folder)


def test_preprocess_killed_while_the_study_arrives(up: Faulty, tmp_path: Path) -> None:
    slices = CHEST["slices"]
    decoded = early_decode(up, "decoded")
    folder = up.chest(tmp_path, seed=42)
    with ThreadPoolExecutor(1) as pool:
        sending = pool.submit(up.send, "acc_north", folder, False)
        up.wait(lambda: early_decode(up, "decoded") > decoded, "instances decoded on arrival",
                120, interval=0.01)
        still_sending = not sending.done()
        old = up.kill("preprocess")  # its decoded instances die with it
        sent = sending.result(timeout=300)
    print(f"preprocess killed {'while' if still_sending else 'after'} the study was sent")
    up.wait_restarted("preprocess", old)
    up.wait(lambda: early_decode(up, "miss") >= 0, "the new preprocess process serving", 60)
    complete(up, sent)
    assert up.wait_final(sent.study_id) == "ready_for_review"
    up.assert_exactly_once([sent.study_id])
    assert early_decode(up, "miss") >= slices, "the new process read every instance itself"
    assert stored_model_input_sha256(up, sent) == expected_model_input_sha256(sent.folder)
    assert not up.audit(sent.study_id, "asset.preprocess_failed")
