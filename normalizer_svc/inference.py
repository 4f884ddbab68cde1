"""Running one registered model on one series: Triton inference with retries, then normalising."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import logging
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from normalizer_svc.builtin.findings import FindingDraft, InvalidModelOutput
from normalizer_svc.builtin.model_input import ModelInput
from normalizer_svc.validation import InvalidResult, validate_findings, validate_outputs
from sidecar_core.circuit import CircuitBreaker
from sidecar_core.errors import TransientError
from sidecar_core.registry import InputSpec, ModelEntry, OutputSpec

log = logging.getLogger(__name__)
NormaliseFn = Callable[[ModelInput, dict[str, np.ndarray], str, str], list[FindingDraft]]
MergeFn = Callable[[list[dict[str, np.ndarray]]], dict[str, np.ndarray]]


class Inferer(Protocol):
    """What run_model needs from Triton (normalizer_svc.triton.TritonClient)."""

    async def infer(self, model: str, inputs: dict[str, np.ndarray], outputs: list[str],
                    deadline_s: float, version: str = "") -> dict[str, np.ndarray]: ...

    async def model_version(self, model: str) -> str: ...


class Normaliser(Protocol):
    """Turns one request's raw outputs into findings (built-in or a model team's service)."""

    async def normalise(self, model_input: ModelInput, outputs: dict[str, np.ndarray],
                        model_name: str, model_version: str, *, series_uid: str = "",
                        ai_run_id: str = "") -> list[FindingDraft]: ...


class BuiltinNormaliser:
    """A pure built-in normaliser function, run in a worker thread (masks can be large).

    `merge`, when set, combines the per-image outputs of a 2-D model into one outputs dict so
    that the series is normalised at once (mammography: one suspicion per study, not per view).
    """

    def __init__(self, fn: NormaliseFn, merge: MergeFn | None = None) -> None:
        self.fn = fn
        self.merge = merge

    async def normalise(self, model_input: ModelInput, outputs: dict[str, np.ndarray],
                        model_name: str, model_version: str, *, series_uid: str = "",
                        ai_run_id: str = "") -> list[FindingDraft]:
        try:
            findings = await asyncio.to_thread(self.fn, model_input, outputs, model_name,
                                               model_version)
        except InvalidModelOutput as exc:
            raise InvalidResult(f"{model_name}: {exc}") from exc
        for f in findings:
            if series_uid and not f.series_instance_uid:
                f.series_instance_uid = series_uid
        return findings


def builtin_normaliser(name: str) -> BuiltinNormaliser:
    """The built-in normaliser `builtin:<name>` of the registry."""
    from normalizer_svc.builtin import BUILTIN_NORMALISERS

    fn = BUILTIN_NORMALISERS.get(name)
    if fn is None:
        raise KeyError(f"no built-in normaliser {name!r} (have: "
                       f"{', '.join(sorted(BUILTIN_NORMALISERS))})")
    module = inspect.getmodule(fn)
    return BuiltinNormaliser(fn, getattr(module, "merge_view_outputs", None))


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of transient inference failures inside one job (the bus redelivers beyond it)."""

    max_attempts: int = 4
    budget_s: float = 120.0
    initial_backoff_s: float = 0.5
    max_backoff_s: float = 8.0
    multiplier: float = 2.0
    jitter: float = 0.2

    def backoff(self, attempt: int) -> float:
        """Delay before attempt `attempt + 1` (attempt counts from 1)."""
        base = min(self.max_backoff_s, self.initial_backoff_s * self.multiplier ** (attempt - 1))
        return base * (1 + random.uniform(-self.jitter, self.jitter))


@dataclass
class InferenceResult:
    findings: list[FindingDraft]
    model_version: str
    latency_ms: dict[str, float] = field(default_factory=dict)  # fetch_input, infer, normalise
    attempts: int = 1  # most tries any single Triton request needed


async def run_model(entry: ModelEntry, model_input: ModelInput, triton: Inferer,
                    circuit: CircuitBreaker, normaliser: Normaliser, *, series_uid: str = "",
                    ai_run_id: str = "", retry: RetryPolicy | None = None,
                    fetch_input_ms: float = 0.0, max_concurrency: int = 4) -> InferenceResult:
    """Infers (one request per volume, or per image / batch of images for 2-D models), validates
    the raw outputs, normalises and validates the findings.

    Raises TransientError once the retry budget is spent, PermanentError (InvalidResult for a
    broken result) at once.
    """
    retry = retry or RetryPolicy()
    started = time.monotonic()
    calls = _plan_requests(entry, model_input)
    tries: list[int] = []
    limit = asyncio.Semaphore(max_concurrency)

    async def one(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        async with limit:
            outputs, n = await _with_retries(entry, triton, circuit, inputs, retry, started)
            tries.append(n)
            return outputs

    t0 = time.monotonic()
    tasks = [asyncio.ensure_future(one(inputs)) for _, inputs in calls]
    try:
        results = await asyncio.gather(*tasks)
    finally:  # the first failure ends the run: stop the other requests
        for task in tasks:
            task.cancel()
    version = await _version(entry, triton)
    infer_ms = (time.monotonic() - t0) * 1000

    t1 = time.monotonic()
    parts = sorted((part for (images, _), outputs in zip(calls, results, strict=True)
                    for part in _per_image(entry, model_input, images, outputs)),
                   key=lambda part: part[0])
    for index, _, outputs in parts:
        _validate(entry, outputs, f" (image {index + 1})" if entry.is_2d else "")
    merge = getattr(normaliser, "merge", None)
    findings: list[FindingDraft] = []
    if entry.is_2d and merge is not None:
        try:
            merged = merge([outputs for _, _, outputs in parts])
        except InvalidModelOutput as exc:
            raise InvalidResult(f"{entry.name}: {exc}") from exc
        findings = await normaliser.normalise(model_input, merged, entry.name, version,
                                              series_uid=series_uid, ai_run_id=ai_run_id)
    else:
        for _, sub_input, outputs in parts:
            findings.extend(await normaliser.normalise(
                sub_input, outputs, entry.name, version, series_uid=series_uid,
                ai_run_id=ai_run_id))
    validate_findings(findings, model_input, series_uid or None, entry.name)
    normalise_ms = (time.monotonic() - t1) * 1000
    return InferenceResult(findings, version, {"fetch_input": round(fetch_input_ms, 3),
                                               "infer": round(infer_ms, 3),
                                               "normalise": round(normalise_ms, 3)},
                           max(tries, default=1))


async def normalise_checked(normaliser: Normaliser, model_input: ModelInput,
                            outputs: dict[str, np.ndarray], model_name: str, model_version: str,
                            output_specs: Sequence[OutputSpec] = (), *, series_uid: str = "",
                            ai_run_id: str = "") -> list[FindingDraft]:
    """Validates raw outputs, normalises them and validates the findings (InvalidResult)."""
    validate_outputs(model_name, output_specs, outputs)
    findings = await normaliser.normalise(model_input, outputs, model_name, model_version,
                                          series_uid=series_uid, ai_run_id=ai_run_id)
    validate_findings(findings, model_input, series_uid or None, model_name)
    return findings


def _validate(entry: ModelEntry, outputs: dict[str, np.ndarray], where: str) -> None:
    try:
        validate_outputs(entry.name, entry.outputs, outputs)
    except InvalidResult as exc:
        raise InvalidResult(f"{exc}{where}") from None


async def _with_retries(entry: ModelEntry, triton: Inferer, circuit: CircuitBreaker,
                        inputs: dict[str, np.ndarray], retry: RetryPolicy, started: float
                        ) -> tuple[dict[str, np.ndarray], int]:
    attempt = 0
    while True:
        attempt += 1
        try:
            outputs = await circuit.call(lambda: triton.infer(
                entry.triton_model, inputs, entry.output_names, entry.deadline_s, entry.version))
            return outputs, attempt
        except TransientError as exc:
            delay = retry.backoff(attempt)
            spent = time.monotonic() - started
            if attempt >= retry.max_attempts or spent + delay > retry.budget_s:
                gave_up = (f"{exc} (gave up after {attempt} attempt"
                           f"{'s' * (attempt != 1)} in {spent:.1f} s)")
                try:  # keep the error class (e.g. TritonTransientError) for the audit event
                    raised = type(exc)(gave_up)
                except Exception:
                    raised = TransientError(gave_up)
                raise raised from exc
            log.info("%s: transient failure (attempt %d), retrying in %.2f s: %s",
                     entry.name, attempt, delay, exc)
            await asyncio.sleep(delay)


async def _version(entry: ModelEntry, triton: Inferer) -> str:
    try:
        return await triton.model_version(entry.triton_model)
    except TransientError:
        return entry.version  # the inference succeeded; do not fail the run over metadata


def _plan_requests(entry: ModelEntry, mi: ModelInput
                   ) -> list[tuple[list[int], dict[str, np.ndarray]]]:
    """(image indices, inputs) per Triton request."""
    if not entry.is_2d:
        return [([], {spec.name: _input(spec, mi, None) for spec in entry.inputs})]
    z = int(np.shape(mi.volume)[0])
    if entry.max_batch <= 0:
        return [([k], {spec.name: _input(spec, mi, k) for spec in entry.inputs})
                for k in range(z)]
    plans = []
    for start in range(0, z, entry.max_batch):
        chunk = list(range(start, min(z, start + entry.max_batch)))
        plans.append((chunk, {spec.name: np.stack([_input(spec, mi, k) for k in chunk])
                              for spec in entry.inputs}))
    return plans


def _input(spec: InputSpec, mi: ModelInput, k: int | None) -> np.ndarray:
    dtype = {"FP32": np.float32, "FP64": np.float64, "FP16": np.float16}.get(spec.datatype)
    if dtype is None:
        raise InvalidResult(f"input {spec.name}: datatype {spec.datatype} is not supported for "
                            f"source {spec.source}")
    if spec.source == "volume":
        array = mi.volume
    elif spec.source == "image":
        array = mi.volume[k if k is not None else 0]
    elif spec.source == "spacing_zyx":
        array = mi.spacing_zyx
    else:
        array = np.asarray(mi.pixel_spacing)
    return np.ascontiguousarray(array, dtype=dtype)


def _per_image(entry: ModelEntry, mi: ModelInput, images: list[int],
               outputs: Mapping[str, np.ndarray]
               ) -> list[tuple[int, ModelInput, dict[str, np.ndarray]]]:
    """Splits one request's outputs into (image index, that image's input, its outputs)."""
    if not entry.is_2d:
        return [(0, mi, dict(outputs))]
    if entry.max_batch <= 0:
        return [(images[0], _slice(mi, images[0]), dict(outputs))]
    parts = []
    for pos, k in enumerate(images):
        sub = {}
        for name, array in outputs.items():
            if np.ndim(array) == 0 or np.shape(array)[0] != len(images):
                raise InvalidResult(f"output {name} of {entry.name} has shape "
                                    f"{list(np.shape(array))}; a batch of {len(images)} needs "
                                    f"{len(images)} rows")
            sub[name] = np.asarray(array)[pos]
        parts.append((k, _slice(mi, k), sub))
    return parts


def _slice(mi: ModelInput, k: int) -> ModelInput:
    """The model input of image k alone (2-D models see one image at a time)."""
    return dataclasses.replace(
        mi, volume=mi.volume[k:k + 1], positions=mi.positions[k:k + 1],
        sop_instance_uids=mi.sop_instance_uids[k:k + 1], frames=mi.frames[k:k + 1],
        laterality=mi.laterality[k:k + 1], view_position=mi.view_position[k:k + 1],
        slice_spacing=math.nan)

