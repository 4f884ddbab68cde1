"""NormalizerService over gRPC for the built-in normalisers: the contract model teams serve."""

from __future__ import annotations

from collections.abc import Mapping

import grpc

from normalizer_svc import convert
from normalizer_svc.inference import Normaliser, normalise_checked
from normalizer_svc.validation import InvalidResult
from protos.sidecar.normalizer.v1 import normalizer_service_pb2 as npb
from protos.sidecar.normalizer.v1 import normalizer_service_pb2_grpc as npb_grpc
from sidecar_core.errors import InvalidArgument, NotFound, TransientError, Unavailable
from sidecar_core.registry import OutputSpec
from sidecar_core.serving.grpc_server import GrpcServer, handle_errors

SERVICE_NAME = npb.DESCRIPTOR.services_by_name["NormalizerService"].full_name


class NormalizerServicer(npb_grpc.NormalizerServiceServicer):
    """Validates the request, runs the named normaliser, maps the findings back."""

    def __init__(self, normalisers: Mapping[str, Normaliser], version: str,
                 output_specs: Mapping[str, tuple[OutputSpec, ...]] | None = None) -> None:
        self.normalisers = dict(normalisers)
        self.version = version
        self.output_specs = dict(output_specs or {})

    @handle_errors
    async def DescribeNormalizer(self, request: npb.DescribeNormalizerRequest,
                                 context: grpc.aio.ServicerContext
                                 ) -> npb.DescribeNormalizerResponse:
        return npb.DescribeNormalizerResponse(model_names=sorted(self.normalisers),
                                              normalizer_version=self.version)

    @handle_errors
    async def Normalize(self, request: npb.NormalizeRequest,
                        context: grpc.aio.ServicerContext) -> npb.NormalizeResponse:
        normaliser = self.normalisers.get(request.model_name)
        if normaliser is None:
            raise NotFound("MODEL_NOT_SERVED", f"this normaliser does not serve model "
                           f"{request.model_name!r}", model_name=request.model_name)
        if not request.HasField("context") or not request.context.HasField("geometry"):
            raise InvalidArgument("GEOMETRY_MISSING", "context.geometry is required",
                                  model_name=request.model_name)
        try:
            model_input = convert.input_from_geometry(request.context.geometry,
                                                      request.context.modality)
            outputs = convert.outputs_from_proto(request.outputs)
            findings = await normalise_checked(
                normaliser, model_input, outputs, request.model_name, request.model_version,
                self.output_specs.get(request.model_name, ()),
                series_uid=request.context.series_instance_uid, ai_run_id=request.ai_run_id)
        except (convert.ConversionError, InvalidResult) as exc:
            raise InvalidArgument("INVALID_MODEL_OUTPUT", str(exc),
                                  model_name=request.model_name) from exc
        except TransientError as exc:
            raise Unavailable("NORMALISER_UNAVAILABLE", str(exc),
                              model_name=request.model_name) from exc
        return npb.NormalizeResponse(findings=[
            convert.finding_to_proto(f, ai_run_id=request.ai_run_id) for f in findings])


def add_to_server(server: GrpcServer, servicer: NormalizerServicer) -> None:
    server.register(npb_grpc.add_NormalizerServiceServicer_to_server, servicer, [SERVICE_NAME])
