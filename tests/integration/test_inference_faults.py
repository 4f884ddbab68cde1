"""Inference against a real tritonserver: success, outages with retries and the circuit breaker,
an exhausted retry budget, garbage outputs and deadlines."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import numpy as np
import pytest

from normalizer_svc.builtin.model_input import ModelInput
from normalizer_svc.inference import RetryPolicy, builtin_normaliser, run_model
from normalizer_svc.triton import TritonClient, TritonPermanentError, TritonTransientError
from normalizer_svc.validation import InvalidResult
from sidecar_core.circuit import CircuitBreaker, CircuitBreakers, CircuitState
from sidecar_core.errors import PermanentError, TransientError
from sidecar_core.registry import InputSpec, ModelEntry, OutputSpec, load_registry
from sidecar_synth import generate
from sidecar_synth.readback import read_study
from tests.servers import free_port
from tests.triton_server import TritonServer, build_model_repository

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FAST_RETRY = RetryPolicy(max_attempts=3, budget_s=30, initial_backoff_s=0.05, max_backoff_s=0.2)


@pytest.fixture(scope="module")
def triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    repo = build_model_repository(tmp_path_factory.mktemp("triton") / "models")
    with TritonServer(repo) as server:
        yield server


@pytest.fixture()
async def client(triton: TritonServer) -> AsyncIterator[TritonClient]:
    async with TritonClient(triton.grpc_url) as c:
        yield c


@pytest.fixture(scope="module")
def chest(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModelInput, list]:
    out = tmp_path_factory.mktemp("chest")
    truth = generate("chest-ct", out, seed=7, slices=60)
    return ModelInput.from_arrays(read_study(out)), truth.lesions


class Counting:
    """The real client, counting the requests it sends and adding constant inputs a test model
    takes (MODE, SECONDS) that no registry input source provides."""

    def __init__(self, inner: TritonClient, **extra: np.ndarray) -> None:
        self.inner = inner
        self.extra = extra
        self.calls = 0

    async def infer(self, model: str, inputs: dict[str, np.ndarray], outputs: list[str],
                    deadline_s: float, version: str = "") -> dict[str, np.ndarray]:
        self.calls += 1
        return await self.inner.infer(model, {**inputs, **self.extra}, outputs, deadline_s,
                                      version)

    async def model_version(self, model: str) -> str:
        return await self.inner.model_version(model)


def entry(registered: str, **changes: object) -> ModelEntry:
    return load_registry().get(registered).model_copy(update=changes)


def garbage_entry() -> ModelEntry:
    return entry("chest_ct_nodules", name="garbage_model", triton_model="garbage_model",
                 version="", inputs=(InputSpec(name="VOLUME", source="volume"),))


async def test_chest_ct_nodules_end_to_end(client: TritonClient, chest) -> None:
    model_input, lesions = chest
    breaker = CircuitBreaker("chest_ct_nodules")
    result = await run_model(entry("chest_ct_nodules"), model_input, client, breaker,
                             builtin_normaliser("chest_ct_nodules"), series_uid="1.2.3",
                             fetch_input_ms=12.5)
    assert result.model_version == "reference-1.0.0"
    assert result.attempts == 1
    assert set(result.latency_ms) == {"fetch_input", "infer", "normalise"}
    assert result.latency_ms["fetch_input"] == 12.5 and result.latency_ms["infer"] > 0
    assert result.findings and all(f.kind == "box" for f in result.findings)
    for lesion in lesions:  # every synthetic nodule found within 5 mm
        distances = [np.linalg.norm(np.subtract(f.center_mm, lesion.center_mm))
                     for f in result.findings]
        assert min(distances) < 5.0, (lesion, [f.center_mm for f in result.findings])


async def test_mammography_runs_one_request_per_view(client: TritonClient,
                                                     tmp_path: Path) -> None:
    generate("mammo", tmp_path, seed=3)
    model_input = ModelInput.from_arrays(read_study(tmp_path))
    counting = Counting(client)
    result = await run_model(entry("mammo_masses"), model_input, counting,
                             CircuitBreaker("mammo_masses"), builtin_normaliser("mammo_masses"))
    assert counting.calls == 4
    summaries = [f for f in result.findings if f.kind == "classification"]
    assert len(summaries) == 1, "one suspicion for the series, not one per view"
    assert {f.sop_instance_uid for f in result.findings} <= set(model_input.sop_instance_uids)


async def test_shape_mismatch_is_permanent_and_not_retried(client: TritonClient, chest) -> None:
    model_input, _ = chest
    bad = entry("chest_ct_nodules", inputs=(InputSpec(name="VOLUME", source="volume"),
                                            InputSpec(name="SPACING", source="spacing_yx")))
    counting = Counting(client)
    with pytest.raises(TritonPermanentError, match="INVALID_ARGUMENT.*SPACING.*Expected \\[3\\]"):
        await run_model(bad, model_input, counting, CircuitBreaker("x"),
                        builtin_normaliser("chest_ct_nodules"), retry=FAST_RETRY)
    assert counting.calls == 1


async def test_a_model_missing_from_the_repository_fails_at_once(client: TritonClient,
                                                                 chest) -> None:
    model_input, _ = chest
    missing = entry("chest_ct_nodules", name="typo_model", triton_model="chest_ct_nodule")
    counting = Counting(client)
    with pytest.raises(TritonPermanentError,
                       match="no model of that name in Triton's model repository "
                             "\\(it has: .*chest_ct_nodules"):
        await run_model(missing, model_input, counting, CircuitBreaker("typo_model"),
                        builtin_normaliser("chest_ct_nodules"), retry=FAST_RETRY)
    assert counting.calls == 1, "a configuration error is not retried"


@pytest.mark.parametrize(
    ("mode", "message"),
    [("misshaped", "output BOXES of garbage_model has shape [3, 5], expected [N, 6]"),
     ("nan", "output BOXES of garbage_model contains 6 NaN/Inf values"),
     ("out_of_range", "garbage_model: output SCORES has values outside 0..1")],
)
async def test_garbage_outputs_are_invalid_results(client: TritonClient, chest, mode: str,
                                                   message: str) -> None:
    model_input, _ = chest
    counting = Counting(client, MODE=np.array([mode.encode()], dtype=object))
    with pytest.raises(InvalidResult) as err:
        await run_model(garbage_entry(), model_input, counting, CircuitBreaker("g"),
                        builtin_normaliser("chest_ct_nodules"), retry=FAST_RETRY)
    assert message in str(err.value)
    assert counting.calls == 1, "an invalid result is not retried"


async def test_garbage_empty_and_error_modes(client: TritonClient, chest) -> None:
    model_input, _ = chest
    empty = Counting(client, MODE=np.array([b"empty"], dtype=object))
    result = await run_model(garbage_entry(), model_input, empty, CircuitBreaker("g"),
                             builtin_normaliser("chest_ct_nodules"))
    assert result.findings == [] and result.model_version == "test-garbage-1"
    failing = Counting(client, MODE=np.array([b"error"], dtype=object))
    with pytest.raises(PermanentError, match="INTERNAL.*asked to fail") as err:
        await run_model(garbage_entry(), model_input, failing, CircuitBreaker("g"),
                        builtin_normaliser("chest_ct_nodules"), retry=FAST_RETRY)
    assert not isinstance(err.value, TransientError) and failing.calls == 1


async def test_slow_model_past_its_deadline_is_transient(client: TritonClient, chest) -> None:
    with pytest.raises(TritonTransientError, match="DEADLINE_EXCEEDED"):
        await client.infer("slow_model", {"SECONDS": np.array([2.0], np.float32)}, ["SLEPT"],
                           deadline_s=0.3)
    model_input, _ = chest
    slow = ModelEntry(
        name="slow_model", triton_model="slow_model", deadline_s=0.3,
        inputs=(InputSpec(name="VOLUME", source="volume"),),
        outputs=(OutputSpec(name="SLEPT", datatype="FP32", rank=1),),
        coverage=load_registry().get("chest_ct_nodules").coverage,
        normaliser="builtin:chest_ct_nodules")
    counting = Counting(client, SECONDS=np.array([1.5], np.float32))
    retry = dataclasses.replace(FAST_RETRY, max_attempts=2)
    with pytest.raises(TransientError, match="DEADLINE_EXCEEDED.*gave up after 2 attempts"):
        await run_model(slow, model_input, counting, CircuitBreaker("slow"),
                        builtin_normaliser("chest_ct_nodules"), retry=retry)
    assert counting.calls == 2


async def test_retry_budget_exhausted_surfaces_transient_error(chest) -> None:
    model_input, _ = chest
    async with TritonClient(f"127.0.0.1:{free_port()}") as nowhere:
        counting = Counting(nowhere)
        with pytest.raises(TransientError, match="UNAVAILABLE.*gave up after 3 attempts"):
            await run_model(entry("chest_ct_nodules"), model_input, counting,
                            CircuitBreaker("c", failure_threshold=10),
                            builtin_normaliser("chest_ct_nodules"), retry=FAST_RETRY)
        assert counting.calls == 3
        assert not await nowhere.is_ready()


async def test_outage_mid_job_retries_through_the_circuit_until_triton_is_back(
        triton: TritonServer, client: TritonClient, chest) -> None:
    """Runs last: takes the module's Triton down and brings it back on the same port."""
    model_input, _ = chest
    breakers = CircuitBreakers(failure_threshold=2, cooldown_s=0.5)
    breaker = breakers.get("chest_ct_nodules")
    counting = Counting(client)
    await asyncio.to_thread(triton.stop)
    assert not await client.is_ready()
    retry = RetryPolicy(max_attempts=60, budget_s=120, initial_backoff_s=0.2, max_backoff_s=0.5)
    job = asyncio.create_task(run_model(entry("chest_ct_nodules"), model_input, counting,
                                        breaker, builtin_normaliser("chest_ct_nodules"),
                                        retry=retry))
    while breaker.failures < 3:  # failed requests, the circuit opened, a half-open trial failed
        await asyncio.sleep(0.05)
        assert not job.done(), job
    calls_while_down = counting.calls
    assert breaker.current_state() in {CircuitState.OPEN, CircuitState.HALF_OPEN}
    await asyncio.to_thread(triton.start)
    result = await asyncio.wait_for(job, 90)
    assert result.findings and result.attempts > calls_while_down >= 3
    assert counting.calls < result.attempts, "an open circuit answers without calling Triton"
    assert breaker.current_state() is CircuitState.CLOSED and breaker.failures == 0
