"""Client of a model team's NormalizerService (the Normalizer contract over gRPC)."""

from __future__ import annotations

import asyncio

import grpc
import numpy as np

from normalizer_svc.builtin.findings import FindingDraft
from normalizer_svc.builtin.model_input import ModelInputLike
from normalizer_svc.convert import (
    ConversionError,
    finding_from_proto,
    geometry_from_input,
    tensor_to_proto,
)
from normalizer_svc.validation import InvalidResult
from protos.sidecar.common.v1 import common_pb2
from protos.sidecar.normalizer.v1 import normalizer_service_pb2 as npb
from protos.sidecar.normalizer.v1 import normalizer_service_pb2_grpc as npb_grpc
from sidecar_core.errors import PermanentError, TransientError
from sidecar_core.security.mesh_tls import MeshCredentials
from sidecar_core.serving.grpc_server import error_info

TRANSIENT = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
             grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.ABORTED}
MAX_MESSAGE_BYTES = 512 * 1024 * 1024


def build_request(model_input: ModelInputLike, outputs: dict[str, np.ndarray], model_name: str,
                  model_version: str, *, series_uid: str = "", ai_run_id: str = "",
                  study: common_pb2.StudyKey | None = None) -> npb.NormalizeRequest:
    """The NormalizeRequest for one request's outputs and the model input they refer to."""
    context = npb.StudyContext(modality=model_input.modality, series_instance_uid=series_uid,
                               geometry=geometry_from_input(model_input))
    if study is not None:
        context.study.CopyFrom(study)
    return npb.NormalizeRequest(
        model_name=model_name, model_version=model_version, ai_run_id=ai_run_id,
        context=context, outputs=[tensor_to_proto(n, a) for n, a in outputs.items()])


class ExternalNormaliser:
    """Normalises through a NormalizerService at `target` (host:port)."""

    def __init__(self, target: str, timeout_s: float = 30.0,
                 study: common_pb2.StudyKey | None = None,
                 credentials: MeshCredentials | None = None) -> None:
        """`credentials`: mutual TLS with the mesh CA (a `grpcs://` registry entry, or the
        in-mesh NormalizerService); None: plaintext (a `grpc://` model team's server)."""
        self.target = target
        self.timeout_s = timeout_s
        self.study = study
        options = [
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.initial_reconnect_backoff_ms", 500),
            ("grpc.max_reconnect_backoff_ms", 5000),
        ]
        self._channel = (credentials.aio_channel(target, options) if credentials is not None
                         else grpc.aio.insecure_channel(target, options=options))
        self._stub = npb_grpc.NormalizerServiceStub(self._channel)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> ExternalNormaliser:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def describe(self) -> npb.DescribeNormalizerResponse:
        try:
            return await self._stub.DescribeNormalizer(npb.DescribeNormalizerRequest(),
                                                       timeout=self.timeout_s)
        except grpc.aio.AioRpcError as exc:
            raise self._classify(exc, "DescribeNormalizer") from exc

    async def normalise(self, model_input: ModelInputLike, outputs: dict[str, np.ndarray],
                        model_name: str, model_version: str, *, series_uid: str = "",
                        ai_run_id: str = "") -> list[FindingDraft]:
        request = build_request(model_input, outputs, model_name, model_version,
                                series_uid=series_uid, ai_run_id=ai_run_id, study=self.study)
        response = await self.normalise_request(request)
        try:
            return [finding_from_proto(f) for f in response.findings]
        except ConversionError as exc:
            raise InvalidResult(f"normaliser at {self.target} returned a broken finding for "
                                f"{model_name}: {exc}") from exc

    async def normalise_request(self, request: npb.NormalizeRequest) -> npb.NormalizeResponse:
        """Sends a prepared request (the conformance check sends deliberately broken ones)."""
        try:
            return await self._stub.Normalize(request, timeout=self.timeout_s)
        except grpc.aio.AioRpcError as exc:
            raise self._classify(exc, f"Normalize({request.model_name})") from exc

    def _classify(self, exc: grpc.aio.AioRpcError, call: str) -> Exception:
        code = exc.code()
        info = error_info(exc)
        reason = f" [{info.reason}]" if info is not None and info.reason else ""
        text = f"normaliser at {self.target}: {call} {code.name}{reason}: {exc.details()}"
        if code in TRANSIENT:
            return NormaliserUnavailable(text)
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            return NormaliserRejected(text)
        return NormaliserFailed(text, code.name)


class NormaliserUnavailable(TransientError):
    """The normaliser could not answer now (UNAVAILABLE, DEADLINE_EXCEEDED, overloaded)."""


class NormaliserRejected(InvalidResult):
    """The normaliser said the outputs cannot be interpreted (INVALID_ARGUMENT)."""


class NormaliserFailed(PermanentError):
    """Any other failure (INTERNAL, UNIMPLEMENTED, ...): retrying the same outputs will not help."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


async def wait_ready(target: str, timeout_s: float = 10.0) -> None:
    """Waits until a channel to `target` is connected (used by the check and by tests)."""
    async with grpc.aio.insecure_channel(target) as channel:
        await asyncio.wait_for(channel.channel_ready(), timeout_s)
