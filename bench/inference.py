"""Benchmarks the AI-run path per study kind on `sidecar up`: fetch input, infer, normalise,
store."""

from __future__ import annotations

import argparse
import asyncio
import io
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench.stack, run as a script

from bench.stack import add_arguments, sidecar_up  # noqa: E402
from normalizer_svc.builtin.model_input import ModelInput  # noqa: E402
from normalizer_svc.convert import finding_to_proto  # noqa: E402
from normalizer_svc.inference import builtin_normaliser, run_model  # noqa: E402
from normalizer_svc.triton import TritonClient  # noqa: E402
from sidecar_core.circuit import CircuitBreaker  # noqa: E402
from sidecar_core.db import Database  # noqa: E402
from sidecar_core.pixels.volume import build_model_input, save_model_input  # noqa: E402
from sidecar_core.registry import ModelEntry, load_registry  # noqa: E402
from sidecar_core.storage.objectstore import ObjectStore  # noqa: E402
from sidecar_core.store.models import AiRun, Facility, Study  # noqa: E402
from sidecar_synth import generate  # noqa: E402
from workflow_svc.study.findings_store import store_findings  # noqa: E402

KINDS = {"chest-ct": "chest_ct_nodules", "mammo": "mammo_masses", "brain-mr": "brain_mr_lesions"}
STAGES = ("fetch_input", "infer", "normalise", "store")


@dataclass
class Prepared:
    kind: str
    seed: int
    study_uid: str
    series_uid: str
    npz: bytes
    shape: tuple[int, ...]


@dataclass
class Sample:
    ms: dict[str, float] = field(default_factory=dict)
    findings: int = 0

    @property
    def total(self) -> float:
        return sum(self.ms.values())


def prepare(kind: str, seed: int, root: Path) -> Prepared:
    """A synthetic study and its model input as the preprocess worker stores it (npz bytes)."""
    folder = root / f"{kind}-{seed}"
    generate(kind, folder, seed)
    datasets = [pydicom.dcmread(p) for p in sorted(folder.glob("*.dcm"))]
    model_input = build_model_input(datasets)
    return Prepared(kind, seed, str(datasets[0].StudyInstanceUID),
                    str(datasets[0].SeriesInstanceUID), save_model_input(model_input),
                    tuple(model_input.volume.shape))


def store_mask(objects: ObjectStore, mask: np.ndarray) -> str:
    """As the ai_run worker stores a mask: compressed npz in the object store."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, mask=np.asarray(mask).astype(np.uint8))
    return objects.put(buffer.getvalue())


async def one_run(study: Prepared, entry: ModelEntry, client: TritonClient, db: Database,
                  objects: ObjectStore, facility_id: uuid.UUID) -> Sample:
    sample = Sample()
    t0 = time.perf_counter()
    model_input = ModelInput.from_npz(study.npz)
    sample.ms["fetch_input"] = (time.perf_counter() - t0) * 1000
    run_id = uuid.uuid4()
    result = await run_model(entry, model_input, client, CircuitBreaker(entry.name),
                             builtin_normaliser(str(entry.builtin_name)),
                             series_uid=study.series_uid, ai_run_id=str(run_id))
    sample.ms["infer"] = result.latency_ms["infer"]
    sample.ms["normalise"] = result.latency_ms["normalise"]
    t1 = time.perf_counter()
    findings = []
    for draft in result.findings:
        finding = finding_to_proto(draft, ai_run_id=str(run_id), finding_id=str(uuid.uuid4()))
        if draft.mask is not None:
            finding.ClearField("mask")
            finding.mask_object_key = store_mask(objects, draft.mask)
        findings.append(finding)
    async with db.unit_of_work() as s:
        study_row = Study(id=uuid.uuid4(), facility_id=facility_id, accession=f"B{run_id.hex[:8]}",
                          study_instance_uid=study.study_uid)
        s.add(study_row)
        await s.flush()
        run = AiRun(id=run_id, study_id=study_row.id, model_name=entry.name,
                    model_version=result.model_version, status="completed")
        s.add(run)
        await s.flush()
        sample.findings = await store_findings(s, run, findings, visible=True)
    sample.ms["store"] = (time.perf_counter() - t1) * 1000
    return sample


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(0.95 * len(ordered)) - 1))]


def print_table(results: dict[str, list[Sample]], prepared: dict[str, list[Prepared]]) -> None:
    header = (f"{'kind':<9} {'input [Z,Y,X]':<15} {'n':>3} {'studies/min':>11}  "
              + "  ".join(f"{s + ' mean/p95 ms':>24}" for s in (*STAGES, "total")))
    print(header)
    print("-" * len(header))
    for kind, samples in results.items():
        shape = "x".join(str(d) for d in prepared[kind][0].shape)
        totals = [s.total for s in samples]
        cells = []
        for stage in STAGES:
            values = [s.ms[stage] for s in samples]
            cells.append(f"{statistics.mean(values):>11.1f} / {p95(values):>9.1f}")
        cells.append(f"{statistics.mean(totals):>11.1f} / {p95(totals):>9.1f}")
        rate = 60000.0 / statistics.mean(totals)
        print(f"{kind:<9} {shape:<15} {len(samples):>3} {rate:>11.1f}  " + "  ".join(
            f"{c:>24}" for c in cells))
    print("\nstudies/min = 60 000 / mean total (one study at a time, sequential); "
          "findings per study: " + ", ".join(
              f"{k} {statistics.mean(s.findings for s in v):.1f}" for k, v in results.items()))


async def bench(args: argparse.Namespace, root: Path, triton_url: str, database_url: str,
                facility: str) -> None:
    """On `sidecar up` as a user starts it (bench/stack.py; or the one running on ``--stack
    DATA_DIR``): its Triton (deploy/triton/models) and its database, a facility of this bench.
    Writes synthetic studies (fixed seeds), builds each series' model input the way the
    preprocess worker does (sidecar_core.pixels: decode, order, stack, save_model_input), then
    runs every study as the ai_run worker would: load the npz (fetch input), run_model (Triton
    inference with output validation, then the built-in normaliser) and store the findings
    (masks to an object store in a temp folder, rows through
    workflow_svc.study.findings_store.store_findings in one transaction). The per-stage split is the
    figure; there is no separate baseline.

    Run: ``.venv/bin/python -m bench.inference [--studies 5] [--repeat 1]``; ``--smoke``: one
    study per kind, once.
    """
    from sqlalchemy import select

    t0 = time.perf_counter()
    registry = load_registry()
    prepared = {kind: [prepare(kind, args.seed + i, root / "studies")
                       for i in range(args.studies)] for kind in KINDS}
    db = Database(database_url)
    objects = ObjectStore(root / "objects", fsync=True)
    async with db.unit_of_work() as s:
        facility_id = (await s.execute(select(Facility.id).where(Facility.name == facility))
                       ).scalar_one()
    async with TritonClient(triton_url) as client:
        for model in KINDS.values():
            deadline = time.monotonic() + 120
            while not await client.is_model_ready(model):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{model} not ready in Triton")
                await asyncio.sleep(0.2)
        print(f"setup ({args.studies} studies per kind, model inputs): "
              f"{time.perf_counter() - t0:.1f} s\n")
        results: dict[str, list[Sample]] = {}
        for kind, model in KINDS.items():
            entry = registry.get(model)
            await one_run(prepared[kind][0], entry, client, db, objects, facility_id)  # warm
            results[kind] = [await one_run(study, entry, client, db, objects, facility_id)
                             for _ in range(args.repeat) for study in prepared[kind]]
    await db.close()
    print_table(results, prepared)


def main() -> None:
    parser = argparse.ArgumentParser(description=bench.__doc__)
    parser.add_argument("--studies", type=int, default=5, help="synthetic studies per kind")
    parser.add_argument("--seed", type=int, default=100, help="first seed (then +1, +2, ...)")
    parser.add_argument("--repeat", type=int, default=1, help="passes over the studies")
    add_arguments(parser)
    args = parser.parse_args()
    if args.smoke:
        args.studies, args.repeat = 1, 1
    root = Path(tempfile.mkdtemp(prefix="bench-inference-"))
    try:
        with sidecar_up(args.stack) as stack:
            runtime = stack.runtime()
            asyncio.run(bench(args, root, runtime["triton_url"], runtime["database_url"],
                              stack.add_facility("inference")))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
