"""Example NormalizerService a model team can copy: chest_ct_nodules outputs → generic findings.

Standalone on purpose: it needs only grpcio, numpy and the generated Normalizer contract
(`protos/sidecar/normalizer/v1/normalizer_service.proto` and `common/v1/common.proto`).

    PYTHONPATH=. python examples/external_normalizer/server.py --address 127.0.0.1:50070
    sidecar normalizer check 127.0.0.1:50070 --model chest_ct_nodules
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import grpc
import numpy as np

from protos.sidecar.common.v1 import common_pb2
from protos.sidecar.normalizer.v1 import normalizer_service_pb2 as npb
from protos.sidecar.normalizer.v1 import normalizer_service_pb2_grpc as npb_grpc

VERSION = "example-chest-1.0.0"
MODEL = "chest_ct_nodules"
LABEL, CODE = "pulmonary nodule candidate", "SCT:786838002"  # SNOMED CT: pulmonary nodule
MIN_SCORE = 0.0  # keep every candidate; the review app filters by confidence


class BadOutputs(ValueError):
    """Outputs this normaliser cannot interpret: answered with INVALID_ARGUMENT."""


def tensor(outputs: dict[str, common_pb2.Tensor], name: str, rank: int) -> np.ndarray:
    t = outputs.get(name)
    if t is None:
        raise BadOutputs(f"output {name} is missing")
    if t.datatype != "FP32":
        raise BadOutputs(f"output {name} is {t.datatype}, expected FP32")
    shape = list(t.shape)
    if len(shape) != rank or any(d < 0 for d in shape):
        raise BadOutputs(f"output {name} has shape {shape}, expected rank {rank}")
    if int(np.prod(shape)) * 4 != len(t.raw_contents):
        raise BadOutputs(f"output {name}: {len(t.raw_contents)} bytes do not fit shape {shape}")
    array = np.frombuffer(t.raw_contents, dtype="<f4").reshape(shape)
    if not np.isfinite(array).all():
        raise BadOutputs(f"output {name} contains NaN or Inf")
    return array


def patient_mm(g: npb.ImageGeometry, x: float, y: float, z: float) -> list[float] | None:
    """LPS mm of (column x, row y, fractional slice z), or None when the series has no geometry."""
    if len(g.positions) != 3 * g.slices or len(g.orientation) != 6 or len(g.pixel_spacing) != 2:
        return None
    positions = np.array(g.positions).reshape(-1, 3)
    k = int(np.clip(np.floor(z), 0, max(0, g.slices - 2)))
    frac = z - k if g.slices > 1 else 0.0
    origin = positions[k] if g.slices == 1 else positions[k] * (1 - frac) + positions[k + 1] * frac
    row_dir, col_dir = np.array(g.orientation[:3]), np.array(g.orientation[3:])
    row_mm, col_mm = g.pixel_spacing
    point = origin + row_dir * col_mm * x + col_dir * row_mm * y
    return [float(v) for v in point]


def normalise(request: npb.NormalizeRequest) -> list[common_pb2.Finding]:
    if request.model_name != MODEL:
        raise BadOutputs(f"this normaliser serves {MODEL}, not {request.model_name!r}")
    g = request.context.geometry
    if g.slices < 1 or g.rows < 1 or g.columns < 1 or len(g.sop_instance_uids) != g.slices:
        raise BadOutputs("context.geometry must give slices, rows, columns and one "
                         "SOPInstanceUID per slice")
    outputs = {t.name: t for t in request.outputs}
    boxes, scores = tensor(outputs, "BOXES", 2), tensor(outputs, "SCORES", 1)
    if boxes.shape[1] != 6:
        raise BadOutputs(f"BOXES has shape {list(boxes.shape)}, expected [N, 6]")
    if len(boxes) != len(scores):
        raise BadOutputs(f"BOXES has {len(boxes)} rows but SCORES has {len(scores)}")
    if ((scores < 0) | (scores > 1)).any():
        raise BadOutputs("SCORES must lie within 0..1")
    limits = np.array([g.slices, g.rows, g.columns] * 2) - 1
    findings = []
    for (z0, y0, x0, z1, y1, x1), score in zip(boxes, scores, strict=True):
        box = np.array([z0, y0, x0, z1, y1, x1])
        if (box < 0).any() or (box > limits).any() or z0 > z1 or y0 > y1 or x0 > x1:
            raise BadOutputs(f"box {box.tolist()} is not inside the {g.slices}×{g.rows}×"
                             f"{g.columns} volume")
        if score < MIN_SCORE:
            continue
        key = int(round((z0 + z1) / 2))
        row_mm, col_mm = (g.pixel_spacing or [float("nan")] * 2)[:2]
        extent = [(x1 - x0 + 1) * col_mm, (y1 - y0 + 1) * row_mm]
        finding = common_pb2.Finding(
            ai_run_id=request.ai_run_id, model_name=request.model_name,
            model_version=request.model_version, label=LABEL, code=CODE,
            confidence=float(score), kind=common_pb2.FINDING_KIND_BOX,
            series_instance_uid=request.context.series_instance_uid,
            sop_instance_uid=g.sop_instance_uids[key],
            frame=g.frames[key] if len(g.frames) == g.slices else 1,
            bbox_px=[float(x0), float(y0), float(x1), float(y1)],
            summary=f"nodule candidate on slice {key + 1} of {g.slices}")
        center = patient_mm(g, (x0 + x1) / 2, (y0 + y1) / 2, (z0 + z1) / 2)
        if center is not None:
            finding.center_mm.extend(center)
        if np.isfinite(extent).all():
            finding.measurements.add(name="diameter_mm", value=float(max(extent)), unit="mm")
        findings.append(finding)
    return findings


class ChestNormalizer(npb_grpc.NormalizerServiceServicer):
    async def DescribeNormalizer(self, request: npb.DescribeNormalizerRequest,
                                 context: grpc.aio.ServicerContext
                                 ) -> npb.DescribeNormalizerResponse:
        return npb.DescribeNormalizerResponse(model_names=[MODEL], normalizer_version=VERSION)

    async def Normalize(self, request: npb.NormalizeRequest,
                        context: grpc.aio.ServicerContext) -> npb.NormalizeResponse:
        try:
            return npb.NormalizeResponse(findings=normalise(request))
        except BadOutputs as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            raise  # unreachable: abort raises


async def serve(address: str) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 512 * 1024 * 1024)])
    npb_grpc.add_NormalizerServiceServicer_to_server(ChestNormalizer(), server)
    port = server.add_insecure_port(address)
    await server.start()
    return server, port


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", default="127.0.0.1:50070", help="host:port (port 0 = any)")
    args = parser.parse_args()
    server, port = await serve(args.address)
    host = args.address.rsplit(":", 1)[0]
    print(f"listening on {host}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(5)


if __name__ == "__main__":
    asyncio.run(main())
