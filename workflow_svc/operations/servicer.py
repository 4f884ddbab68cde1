"""OperationsService over gRPC: dead letters listed, re-driven and discarded by operators."""

from __future__ import annotations

from datetime import UTC
from typing import Any

import grpc
from google.protobuf import json_format, struct_pb2

from protos.sidecar.workflow.v1 import operations_service_pb2 as pb
from protos.sidecar.workflow.v1 import operations_service_pb2_grpc as pb_grpc
from sidecar_core.db import Database
from sidecar_core.egress import EgressPolicy
from sidecar_core.messaging.subjects import Topology
from sidecar_core.secret_box import SecretBox
from sidecar_core.serving.grpc_server import GrpcServer, handle_errors
from workflow_svc.operations import analytics, facility_settings
from workflow_svc.operations.dead_letters import DeadLetters, Filter, Letter

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["OperationsService"].full_name


def _filter(f: pb.DeadLetterFilter) -> Filter:
    return Filter(f.facility, f.kind, tuple(f.sequences))


def _message(letter: Letter) -> pb.DeadLetter:
    d = letter.letter
    out = pb.DeadLetter(
        sequence=letter.sequence, kind=letter.kind, original_subject=d.original_subject,
        original_msg_id=d.original_msg_id, consumer=d.consumer, deliveries=d.deliveries,
        error_class=d.error_class, error_message=d.error_message, facility=letter.facility,
        accession=letter.accession, study_instance_uid=letter.study_instance_uid,
        study_id=letter.study_id, job_id=letter.job_id)
    if d.HasField("at"):
        out.at.CopyFrom(d.at)
    return out


class OperationsServicer(pb_grpc.OperationsServiceServicer):
    def __init__(self, letters: DeadLetters) -> None:
        self.letters = letters

    @handle_errors
    async def ListDeadLetters(self, request: pb.ListDeadLettersRequest,
                              context: grpc.aio.ServicerContext) -> pb.ListDeadLettersResponse:
        found, token = await self.letters.find(_filter(request.filter), request.page_size,
                                               request.page_token)
        return pb.ListDeadLettersResponse(dead_letters=[_message(x) for x in found],
                                          next_page_token=token)

    @handle_errors
    async def RedriveDeadLetters(
            self, request: pb.RedriveDeadLettersRequest,
            context: grpc.aio.ServicerContext) -> pb.RedriveDeadLettersResponse:
        done = await self.letters.redrive(_filter(request.filter), request.operator)
        return pb.RedriveDeadLettersResponse(redriven=done)

    @handle_errors
    async def DiscardDeadLetters(
            self, request: pb.DiscardDeadLettersRequest,
            context: grpc.aio.ServicerContext) -> pb.DiscardDeadLettersResponse:
        done = await self.letters.discard(_filter(request.filter), request.operator,
                                          request.reason)
        return pb.DiscardDeadLettersResponse(discarded=done)


class AnalyticsServicer(pb_grpc.AnalyticsServiceServicer):
    def __init__(self, db: Database) -> None:
        self.db = db

    @handle_errors
    async def GetReviewAnalytics(
            self, request: pb.GetReviewAnalyticsRequest,
            context: grpc.aio.ServicerContext) -> pb.GetReviewAnalyticsResponse:
        found = await analytics.review_analytics(
            self.db, request.facility,
            request.since.ToDatetime(UTC) if request.HasField("since") else None,
            request.until.ToDatetime(UTC) if request.HasField("until") else None)
        return pb.GetReviewAnalyticsResponse(
            rates=[pb.DecisionRates(dimension=r.dimension, value=r.value, reviewed=r.reviewed,
                                    **r.counts) for r in found.rates],
            turnaround=[pb.StageTurnaround(**t) for t in found.turnaround],
            added=[pb.AddedFindings(**a) for a in found.added],
            shadow=[pb.ShadowComparison(**c) for c in found.shadow])


class FacilityServicer(pb_grpc.FacilityServiceServicer):
    def __init__(self, db: Database, topology: Topology, known_models: list[str],
                 egress: EgressPolicy | None = None, box: SecretBox | None = None) -> None:
        self.db = db
        self.topology = topology
        self.table = facility_settings.settings_table(known_models)
        self.egress = egress
        self.box = box

    @handle_errors
    async def ListFacilities(self, request: pb.ListFacilitiesRequest,
                             context: grpc.aio.ServicerContext) -> pb.ListFacilitiesResponse:
        found = await facility_settings.list_facilities(self.db, self.table)
        return pb.ListFacilitiesResponse(facilities=[_struct(f) for f in found])

    @handle_errors
    async def CreateFacility(self, request: pb.CreateFacilityRequest,
                             context: grpc.aio.ServicerContext) -> pb.CreateFacilityResponse:
        saved = await facility_settings.save(
            self.db, self.topology, self.table, request.name,
            json_format.MessageToDict(request.settings), request.operator, True, via="api",
            egress=self.egress, box=self.box)
        return pb.CreateFacilityResponse(facility=_struct(saved))

    @handle_errors
    async def UpdateFacility(self, request: pb.UpdateFacilityRequest,
                             context: grpc.aio.ServicerContext) -> pb.UpdateFacilityResponse:
        saved = await facility_settings.save(
            self.db, self.topology, self.table, request.name,
            json_format.MessageToDict(request.settings), request.operator, False, via="api",
            egress=self.egress, box=self.box)
        return pb.UpdateFacilityResponse(facility=_struct(saved))


def _struct(values: dict[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(values)
    return out


def register(server: GrpcServer, letters: DeadLetters, db: Database,
             topology: Topology | None = None, known_models: list[str] | None = None,
             egress: EgressPolicy | None = None, box: SecretBox | None = None) -> None:
    if topology is not None:
        server.register(pb_grpc.add_FacilityServiceServicer_to_server,
                        FacilityServicer(db, topology, known_models or [], egress, box),
                        [pb.DESCRIPTOR.services_by_name["FacilityService"].full_name])
    server.register(pb_grpc.add_OperationsServiceServicer_to_server,
                    OperationsServicer(letters), [SERVICE_NAME])
    server.register(pb_grpc.add_AnalyticsServiceServicer_to_server, AnalyticsServicer(db),
                    [pb.DESCRIPTOR.services_by_name["AnalyticsService"].full_name])
