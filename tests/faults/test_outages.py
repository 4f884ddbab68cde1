"""Servers failing under `sidecar up`: NATS and PostgreSQL restarted, Triton stopped, the object
store refusing writes, duplicate notifications and a poison message. Afterwards every study
reached its state once, no job was lost or done twice, and the audit says what happened."""

from __future__ import annotations

import resource
import signal
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from protos.sidecar.events.v1 import events_pb2
from protos.sidecar.ingest.v1 import ingest_service_pb2 as ingest_pb
from protos.sidecar.ingest.v1 import ingest_service_pb2_grpc as ingest_grpc
from tests.faults.harness import Command, Faulty, _nats, pg_ctl, stop_pid


@contextmanager
def no_file_may_grow(pid: int) -> Iterator[None]:
    """RLIMIT_FSIZE 0 (the soft limit; the hard one stays, so it can be lifted again) on a
    running process: every write that would grow a file fails with EFBIG."""
    soft, hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (0, hard))
    try:
        yield
    finally:
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (soft, hard))


def test_nats_restarted_during_a_study(up: Faulty, tmp_path: Path) -> None:
    sent = up.send("acc_north", up.chest(tmp_path, seed=31))
    up.wait(lambda: up.state(sent.study_id) in ("received", "processed"), "study received")
    up.restart_server("nats-server", pause_s=2.0)
    assert up.wait_final(sent.study_id) == "ready_for_review"
    up.assert_exactly_once([sent.study_id])


def test_postgresql_restarted_under_load(up: Faulty, tmp_path: Path) -> None:
    folders = [up.chest(tmp_path, seed=40 + i, slices=48) for i in range(3)]
    with ThreadPoolExecutor(3) as pool:
        sending = [pool.submit(up.send, "acc_south", f, retry_s=120) for f in folders]
        first = sending[0].result()
        up.wait(lambda: up.state(first.study_id) is not None, "the first study received")
        restarted = pg_ctl(up.stack.data_dir, "restart", "-m", "fast", "-w")
        assert restarted.returncode == 0, restarted.stdout + restarted.stderr
        sent = [f.result() for f in sending]
    for study in sent:
        assert up.wait_final(study.study_id) == "ready_for_review"
    up.assert_exactly_once([s.study_id for s in sent])


def test_triton_stopped_then_back(up: Faulty, tmp_path: Path) -> None:
    triton = up.server_pid("tritonserver")
    command = Command.of(triton)
    stop_pid(triton, signal.SIGTERM)  # stopped, as an operator or an OOM-killer would
    try:
        sent = up.send("acc_north", up.chest(tmp_path, seed=33))
        retry = up.wait_audit(sent.study_id, "ai_run.retry_scheduled", 240)
        assert retry["attempt"] == 1 and retry["error_class"], retry
    finally:  # back on the same ports: the scheduled retries find it
        up.adopted.append(command.start())
    assert up.wait_final(sent.study_id, timeout=300) == "ready_for_review"
    up.assert_exactly_once([sent.study_id])
    [run] = up.rows("select status, attempts from ai_runs where study_id = %(id)s",
                    id=sent.study_id)
    assert run["status"] == "completed" and run["attempts"] >= 2
    redelivered = up.audit(sent.study_id, "job.redelivered")
    assert len(redelivered) == run["attempts"] - 1
    assert all(e["context"]["cause"].startswith("retry after attempt") for e in redelivered)


def test_a_hundred_duplicate_notifications(up: Faulty, tmp_path: Path) -> None:
    sent = up.send("acc_north", up.chest(tmp_path, seed=34, slices=48), complete=False)
    request = ingest_pb.CompleteStudyRequest(facility="acc_north",
                                             study_instance_uid=sent.study_instance_uid)
    with up.stack.channel("ingest") as channel:
        stub = ingest_grpc.IngestServiceStub(channel)
        with ThreadPoolExecutor(16) as pool:
            replies = list(pool.map(lambda _: stub.CompleteStudy(request, timeout=60),
                                    range(100)))
    assert all(r.study_ids in ([], [str(sent.study_id)]) for r in replies)
    assert up.wait_final(sent.study_id) == "ready_for_review"
    # ... and its study.received event 100 times more, as a relay replaying its outbox would
    event = events_pb2.StudyReceived(study_id=str(sent.study_id), instance_count=48)

    async def replay(js):  # type: ignore[no-untyped-def]
        return [(await js.publish("sidecar.study.v1.received", event.SerializeToString(),
                                  headers={"Nats-Msg-Id": f"study.received:{sent.study_id}:1"}
                                  )).duplicate for _ in range(100)]

    # JetStream drops them, or the consumer's record of ids
    _nats(up.nats_url, replay, up.stack.data_dir)
    up.assert_exactly_once([sent.study_id])
    received = up.audit(sent.study_id, "study.received")
    assert len(received) == 1 and not up.audit(sent.study_id, "study.updated")


def test_a_poison_message_is_dead_lettered_and_others_go_on(up: Faulty, tmp_path: Path) -> None:
    before = up.dead_letters()

    async def publish(js):  # type: ignore[no-untyped-def]
        job = events_pb2.AiRunJob(job_id="poison-1", ai_run_id="not-a-uuid")
        await js.publish("sidecar.job.v1.ai_run", job.SerializeToString(),
                         headers={"Nats-Msg-Id": "poison-1"})
        await js.publish("sidecar.job.v1.preprocess", b"\xff\x00 not protobuf",
                         headers={"Nats-Msg-Id": "poison-2"})

    _nats(up.nats_url, publish, up.stack.data_dir)
    sent = up.send("acc_south", up.chest(tmp_path, seed=35, slices=48))
    assert up.wait_final(sent.study_id) == "ready_for_review"
    up.wait(lambda: up.dead_letters() == before + 2, "two dead letters", 60)

    async def letters(js):  # type: ignore[no-untyped-def]
        sub = await js.subscribe("sidecar.dlq.>", ordered_consumer=True)
        out = []
        for _ in range(before + 2):
            out.append(events_pb2.DeadLetter.FromString((await sub.next_msg(10)).data))
        return out[before:]

    dead = {d.original_msg_id: d for d in _nats(up.nats_url, letters, up.stack.data_dir)}
    assert dead["poison-1"].error_class == "PermanentError"
    assert dead["poison-1"].consumer == "ai-run-worker"
    assert dead["poison-2"].consumer == "preprocess-worker"
    up.expected_dead_letters = before + 2

    def dead_letter_audits() -> list[dict]:
        rows = up.rows("select job_id, attempt, error_class, context from audit_events "
                       "where type = 'job.dead_lettered' and job_id in ('poison-1', 'poison-2')")
        return rows if len(rows) == 2 else []

    audited = {r["job_id"]: r for r in up.wait(dead_letter_audits, "both audited", 60)}
    assert audited["poison-1"]["error_class"] == "PermanentError"
    assert audited["poison-1"]["context"]["consumer"] == "ai-run-worker"
    assert audited["poison-2"]["context"]["subject"] == "sidecar.job.v1.preprocess"
    assert all(r["attempt"] == 1 for r in audited.values())
    up.assert_exactly_once([sent.study_id])


def test_the_object_store_refusing_writes(up: Faulty, tmp_path: Path) -> None:
    """No file may grow (RLIMIT_FSIZE 0 on the ingest and preprocess processes): the ingest
    refuses, audited, and keeps nothing half-written; the preprocess job retries; once the
    store takes writes again the same study goes through once."""
    [ingest] = up.pids("ingest")
    folder = up.chest(tmp_path, seed=36, slices=48)
    with no_file_may_grow(ingest):
        done = up.send_raw("acc_north", folder)
    assert done.returncode != 0 and "rejected" in (done.stdout + done.stderr).lower(), done
    failed = up.rows("select error_class from audit_events where type = 'study.receive_failed' "
                     "and context->>'source' = 'grpc'")
    assert failed and {f["error_class"] for f in failed} == {"STORAGE_FAILED"}
    [preprocess] = up.pids("preprocess")
    with no_file_may_grow(preprocess):
        sent = up.send("acc_north", folder)
        up.wait(lambda: up.audit(sent.study_id, "job.redelivered"), "a preprocess retry", 120)
    assert up.wait_final(sent.study_id) == "ready_for_review"
    up.assert_exactly_once([sent.study_id])
    verify = up.stack.cli("objects", "verify", "--study", sent.study_instance_uid)
    assert verify.returncode == 0, verify.stdout + verify.stderr
