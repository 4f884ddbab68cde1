"""`sidecar facility check NAME`: walks a synthetic test study through every stage of a
running `sidecar up` for one facility and prints a PASS / FAIL / SKIP line per stage.

Stages: the facility's settings; C-ECHO with its AE title; sending one synthetic study per
enabled model (C-STORE with the facility's AE title, or the Ingest RPC when it has none) and
completing it; eligibility; display assets and model inputs; each model's run; findings
visible (stored and hidden in shadow mode). The test studies are labelled as such (patient
`SIDECAR^CHECK`, accession `CHECK…`) and stay in the store like any study.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protos.sidecar.ingest.v1 import ingest_service_pb2 as ingest_pb
from protos.sidecar.ingest.v1 import ingest_service_pb2_grpc as ingest_grpc
from protos.sidecar.workflow.v1 import review_service_pb2 as rv_pb
from protos.sidecar.workflow.v1 import review_service_pb2_grpc as rv_grpc
from protos.sidecar.workflow.v1 import workflow_service_pb2 as wf_pb
from protos.sidecar.workflow.v1 import workflow_service_pb2_grpc as wf_grpc
from sidecar_app.credentials_cli import add_credentials_flag
from sidecar_core.egress import EgressPolicy, EgressRefused
from sidecar_core.security.mesh_tls import MeshCredentials

# The synthetic study that exercises each reference model, small enough to pass in seconds.
KIND_OF_MODEL = {"chest_ct_nodules": "chest-ct", "mammo_masses": "mammo",
                 "brain_mr_lesions": "brain-mr"}
SMALL: dict[str, dict[str, Any]] = {
    "chest-ct": {"slices": 48, "rows": 192, "cols": 192, "fov_mm": 280.0},
    "brain-mr": {"slices": 20, "rows": 160, "cols": 160, "lesions": 1},
    "mammo": {"masses": 1}}
FINAL = {"ready_for_review", "ineligible", "preprocess_failed", "ai_failed"}
# The check reads the study as the review app does (ReviewService), as an operator who sees
# every facility and shadow-mode findings.


@dataclass
class Targets:
    ingest: str
    workflow: str
    dicom: str
    credentials: MeshCredentials
    called_ae: str = "SIDECAR"


@dataclass
class Facility:
    name: str
    ae_title: str
    shadow_mode: bool
    enabled_models: list[str] | None
    pacs: tuple[str, str, int] | None = None  # export destination: AE title, host, port
    handoff_url: str = ""
    pacs_tls: bool = False  # the export speaks DICOM TLS


class Report:
    """Prints one line per stage and remembers whether any failed."""

    def __init__(self, out: Callable[[str], None] = print) -> None:
        self.out = out
        self.failed = False

    def line(self, verdict: str, stage: str, detail: str) -> None:
        self.failed |= verdict == "FAIL"
        self.out(f"{verdict:<4} {stage}: {detail}")


def targets_of(data_dir: Path, ingest: str, workflow: str, dicom: str,
               credentials: MeshCredentials) -> Targets:
    """Explicit addresses win; else the ports `sidecar up` wrote to DATA_DIR/runtime.json."""
    ports: dict[str, int] = {}
    runtime = data_dir / "runtime.json"
    if runtime.exists():
        ports = json.loads(runtime.read_text()).get("ports", {})
    return Targets(ingest or f"127.0.0.1:{ports.get('ingest', 50051)}",
                   workflow or f"127.0.0.1:{ports.get('workflow', 50052)}",
                   dicom or f"127.0.0.1:{ports.get('dicom', 11112)}", credentials)


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host or "127.0.0.1", int(port)


def _echo(facility: Facility, targets: Targets, report: Report) -> bool:
    from sidecar_core.dicom.store_scu import AssociationRefused, StoreSCU, status_of  # noqa: F401

    if not facility.ae_title:
        report.line("SKIP", "dicom echo", "no AE title set; test studies go over the Ingest RPC")
        return False
    host, port = _host_port(targets.dicom)
    try:
        with StoreSCU(host, port, facility.ae_title, targets.called_ae, []) as scu:
            status = scu.echo()
    except Exception as exc:  # refused association, connection refused, timeout
        report.line("FAIL", "dicom echo", f"{targets.dicom} as {facility.ae_title}: {exc}")
        return False
    if status != 0:
        report.line("FAIL", "dicom echo", f"status 0x{status:04X}")
        return False
    report.line("PASS", "dicom echo", f"{targets.dicom} answers C-ECHO from {facility.ae_title}")
    return True


def _send(kind: str, facility: Facility, targets: Targets, dimse: bool, folder: Path,
          seed: int) -> str:
    """Writes and sends one synthetic study; returns its StudyInstanceUID."""
    import pydicom

    from sidecar_core.dicom.store_scu import StoreSCU, chunks, prepare, status_of
    from sidecar_synth import generate

    truth = generate(kind, folder, seed, **SMALL.get(kind, {}))
    files = [folder / name for name in truth.files]
    blobs = []
    for path in files:
        ds = pydicom.dcmread(path)
        ds.PatientName = "SIDECAR^CHECK"
        ds.AccessionNumber = f"CHECK{seed % 10**11:011d}"
        from io import BytesIO

        buf = BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        blobs.append(buf.getvalue())
    uid = str(truth.study_instance_uid)
    if dimse:
        host, port = _host_port(targets.dicom)
        items = [prepare(b) for b in blobs]
        for group in chunks(items, key=lambda i: i.context):
            with StoreSCU(host, port, facility.ae_title, targets.called_ae,
                          [i.context for i in group]) as scu:
                for item in group:
                    status = status_of(scu.store(item))
                    if status != 0:
                        raise RuntimeError(f"C-STORE answered 0x{status or 0:04X}")
    with targets.credentials.channel(targets.ingest, options=[
            ("grpc.max_send_message_length", 256 << 20)]) as channel:
        stub = ingest_grpc.IngestServiceStub(channel)
        if not dimse:
            reply = stub.IngestInstances(ingest_pb.IngestInstancesRequest(
                facility=facility.name,
                items=[ingest_pb.IngestInstancesRequestItem(dicom=b) for b in blobs]),
                timeout=120)
            bad = [r for r in reply.results if r.outcome not in (
                ingest_pb.INSTANCE_OUTCOME_STORED, ingest_pb.INSTANCE_OUTCOME_DUPLICATE)]
            if bad:
                raise RuntimeError(f"{len(bad)} instances refused: {bad[0].message}")
        stub.CompleteStudy(ingest_pb.CompleteStudyRequest(
            facility=facility.name, study_instance_uid=uid), timeout=60)
    return uid


def _wait_final(review: rv_grpc.ReviewServiceStub, facility: str, uid: str,
                timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    study_id = ""
    reply = None
    while time.monotonic() < deadline:
        if not study_id:
            listed = review.ListWorklist(rv_pb.ListWorklistRequest(
                facility=facility, page_size=500), timeout=30)
            study_id = next((s.study.study_id for s in listed.studies
                             if s.study.study_instance_uid == uid), "")
        if study_id:
            reply = review.GetStudyDetail(rv_pb.GetStudyDetailRequest(
                study_id=study_id), timeout=30)
            if reply.study.study.state in FINAL:
                return reply
        time.sleep(0.5)
    return reply


def _check_study(kind: str, facility: Facility, targets: Targets, dimse: bool, folder: Path,
                 report: Report, timeout_s: float) -> None:
    try:
        uid = _send(kind, facility, targets, dimse, folder, int(time.time() * 1000))
    except Exception as exc:
        report.line("FAIL", f"send {kind}", f"{type(exc).__name__}: {exc}")
        return
    report.line("PASS", f"send {kind}", f"study {uid} stored over "
                f"{'C-STORE' if dimse else 'the Ingest RPC'} and completed")
    with targets.credentials.channel(targets.workflow) as channel:
        workflow = wf_grpc.WorkflowServiceStub(channel)
        review = rv_grpc.ReviewServiceStub(channel)
        reply = _wait_final(review, facility.name, uid, timeout_s)
        if reply is None:
            report.line("FAIL", "eligibility", f"the study did not reach the workflow within "
                        f"{timeout_s:.0f} s (is the workflow service consuming?)")
            return
        study = reply.study.study
        if study.state not in FINAL:
            report.line("FAIL", "pipeline", f"still {study.state} after {timeout_s:.0f} s")
            return
        if not study.eligibility.eligible:
            report.line("FAIL", "eligibility", f"ineligible: {study.eligibility.reason}")
            return
        report.line("PASS", "eligibility", f"eligible for {', '.join(study.eligibility.models)}")
        if study.state == "preprocess_failed":
            reason = reply.state_history[-1].reason if reply.state_history else ""
            report.line("FAIL", "assets", f"preprocessing failed: {reason}")
            return
        ready = sum(s.preprocess_status == "complete" for s in reply.series)
        prepared = [s for s in reply.series if s.preprocess_status]
        report.line("PASS" if ready else "FAIL", "assets",
                    f"{ready} of {len(prepared)} series prepared completely")
        events = workflow.ListAuditEvents(wf_pb.ListAuditEventsRequest(
            study_id=study.study_id, page_size=500), timeout=30).events
        for model in study.eligibility.models:
            runs = [e for e in events if e.type in ("ai_run.completed", "ai_run.failed",
                                                    "ai_result.invalid")
                    and e.context.fields["model"].string_value == model]
            if any(e.type == "ai_run.completed" for e in runs):
                report.line("PASS", f"model {model}", "completed")
            elif runs:
                report.line("FAIL", f"model {model}",
                            f"{runs[-1].type}: {runs[-1].error_class}: {runs[-1].error_message}")
            else:
                report.line("FAIL", f"model {model}", "no result recorded")
        findings = review.ListReviewFindings(rv_pb.ListReviewFindingsRequest(
            study_id=study.study_id, include_hidden=True), timeout=30).findings
        visible = sum(f.state.visible for f in findings)
        if facility.shadow_mode:
            report.line("PASS" if findings else "FAIL", "findings",
                        f"shadow mode: {len(findings)} stored, hidden from reviewers")
        elif visible:
            report.line("PASS", "findings", f"{visible} visible in study state {study.state}")
        else:
            report.line("FAIL", "findings", f"none visible (study state {study.state})")


def run(facility: Facility, targets: Targets, kinds: list[str], timeout_s: float,
        report: Report, egress: EgressPolicy | None = None) -> int:
    """Every stage, a line each; the export and handoff destinations are checked against the
    egress policy (`egress`; none listed when None) before they are connected to, as the jobs
    do."""
    models = facility.enabled_models
    report.line("PASS", "facility", f"{facility.name}: AE title {facility.ae_title or '-'}, "
                f"shadow mode {'on' if facility.shadow_mode else 'off'}, models "
                f"{','.join(models) if models is not None else 'all'}")
    dimse = _echo(facility, targets, report)
    if facility.ae_title and not dimse:
        report.line("FAIL", "send", "skipped: the DICOM port did not answer")
        return 1
    with tempfile.TemporaryDirectory(prefix="sidecar-check-") as tmp:
        for i, kind in enumerate(kinds):
            _check_study(kind, facility, targets, dimse, Path(tmp) / f"{i}-{kind}", report,
                         timeout_s)
    _export(facility, report, egress or EgressPolicy())
    _handoff(facility, report, egress or EgressPolicy())
    return 1 if report.failed else 0


def _export(facility: Facility, report: Report, egress: EgressPolicy) -> None:
    """The PACS the results go to answers a C-ECHO from the sidecar."""
    from sidecar_core.dicom.store_scu import StoreSCU

    if facility.pacs is None:
        report.line("SKIP", "export", "no PACS export destination configured")
        return
    aet, host, port = facility.pacs
    try:  # the address rules, as the export job applies them
        address = asyncio.run(egress.check_dicom(host, port, tls=facility.pacs_tls)).addresses[0]
    except EgressRefused as exc:
        report.line("FAIL", "export", f"refused by the egress policy: {exc.message}")
        return
    try:
        tls = None
        if facility.pacs_tls:  # the client context the export uses (SIDECAR_PACS_TLS_CA, ...)
            from sidecar_core.security.dicom_tls import DicomTlsSettings

            tls = DicomTlsSettings().scu_context()
        with StoreSCU(address, port, "SIDECAR", aet, [], timeout_s=10, tls=tls,
                      server_name=host) as scu:
            status = scu.echo()
    except Exception as exc:
        report.line("FAIL", "export", f"{aet}@{host}:{port} does not answer: {exc}")
        return
    report.line("PASS" if status == 0 else "FAIL", "export",
                f"{aet}@{host}:{port} answers C-ECHO{' over DICOM TLS' if tls else ''} "
                f"(status 0x{max(status, 0):04X})")


def _handoff(facility: Facility, report: Report, egress: EgressPolicy) -> None:
    """The handoff endpoint accepts a TCP connection (no status message is sent)."""
    import socket
    from urllib.parse import urlsplit

    if not facility.handoff_url:
        report.line("SKIP", "handoff", "no handoff destination configured")
        return
    url = urlsplit(facility.handoff_url)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:  # as the handoff job does: checked, then connected to the checked address
        address = asyncio.run(egress.check_url(facility.handoff_url)).addresses[0]
    except EgressRefused as exc:
        report.line("FAIL", "handoff", f"refused by the egress policy: {exc.message}")
        return
    try:
        with socket.create_connection((address, port), timeout=5):
            pass
    except OSError as exc:
        report.line("FAIL", "handoff", f"{url.hostname}:{port} unreachable: {exc}")
        return
    report.line("PASS", "handoff", f"{url.hostname}:{port} accepts connections")


def kinds_for(facility: Facility, known_models: list[str], chosen: list[str]) -> list[str]:
    if chosen:
        return chosen
    models = facility.enabled_models if facility.enabled_models is not None else known_models
    return sorted({KIND_OF_MODEL[m] for m in models if m in KIND_OF_MODEL}) or ["chest-ct"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name")
    p.add_argument("--kind", action="append", default=[], choices=sorted(SMALL),
                   help="synthetic study kinds to send (default: one per enabled model)")
    p.add_argument("--ingest", default="", help="Ingest RPC HOST:PORT (default: runtime.json)")
    p.add_argument("--workflow", default="", help="workflow HOST:PORT (default: runtime.json)")
    p.add_argument("--dicom", default="", help="DICOM HOST:PORT (default: runtime.json)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per study")
    add_credentials_flag(p)
