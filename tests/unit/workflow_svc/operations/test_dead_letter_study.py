"""Which study a dead letter was about (for its audit event)."""

from __future__ import annotations

import uuid

from protos.sidecar.common.v1 import common_pb2
from protos.sidecar.events.v1 import events_pb2
from workflow_svc.operations.dead_letters import study_of


def test_a_job_names_its_study() -> None:
    sid = uuid.uuid4()
    job = events_pb2.AiRunJob(study_id=str(sid), study=common_pb2.StudyKey(
        facility="north", accession="A1", study_instance_uid="1.2.3"))
    ref = study_of("job.v1.ai_run", job.SerializeToString())
    assert ref is not None and (ref.study_id, ref.facility, ref.accession) == (sid, "north", "A1")


def test_garbage_or_an_unknown_subject_names_none() -> None:
    assert study_of("job.v1.preprocess", b"\xff\x00 not protobuf") is None
    assert study_of("job.v1.ai_run", events_pb2.AiRunJob(study_id="x").SerializeToString()) is None
    assert study_of("job.v1.llm_assist", b"") is None
