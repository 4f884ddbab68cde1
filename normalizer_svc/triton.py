"""Triton adapter (tritonclient.grpc.aio): inference, versions, readiness, error classification."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import numpy as np
from tritonclient.grpc import InferInput, InferRequestedOutput
from tritonclient.grpc.aio import InferenceServerClient
from tritonclient.utils import InferenceServerException, np_to_triton_dtype, triton_to_np_dtype

from normalizer_svc import triton_shm
from sidecar_core.errors import PermanentError, TransientError

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 2**31 - 1
SHM_MIN_BYTES = 4 * 2**20  # inputs from this size on go through system shared memory
TRANSIENT_CODES = {"StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED",
                   "StatusCode.RESOURCE_EXHAUSTED", "StatusCode.ABORTED",
                   "StatusCode.CANCELLED", "StatusCode.UNKNOWN"}
# Messages that mean "not now" even under a code that would otherwise be permanent.
TRANSIENT_HINTS = ("not ready", "unavailable", "connection refused", "failed to connect",
                   "socket closed", "connection reset", "is not found", "unknown model",
                   "timeout", "timed out", "deadline")


class TritonTransientError(TransientError):
    """Triton could not answer now (down, overloaded, model not ready, deadline passed)."""


class TritonPermanentError(PermanentError):
    """Triton rejected the request itself (invalid argument, shape or datatype mismatch)."""


def classify(exc: BaseException, model: str) -> TransientError | PermanentError:
    """Maps a tritonclient/gRPC failure to a transient or permanent error naming the model."""
    if isinstance(exc, TransientError | PermanentError):
        return exc
    if isinstance(exc, InferenceServerException):
        status = exc.status() or ""
        message = exc.message() or str(exc)
    elif isinstance(exc, asyncio.TimeoutError | TimeoutError):
        status, message = "StatusCode.DEADLINE_EXCEEDED", "timed out"
    elif isinstance(exc, ConnectionError | OSError):
        status, message = "StatusCode.UNAVAILABLE", str(exc)
    else:
        status, message = "", f"{type(exc).__name__}: {exc}"
    code = status.removeprefix("StatusCode.") or "ERROR"
    text = f"triton {code} for {model}: {message}"
    lowered = message.lower()
    if status in TRANSIENT_CODES:
        return TritonTransientError(text)
    if status == "StatusCode.INTERNAL" and any(h in lowered for h in ("not ready", "unavailable")):
        return TritonTransientError(text)
    if status in {"StatusCode.NOT_FOUND", "StatusCode.FAILED_PRECONDITION"} or \
            (status == "" and any(h in lowered for h in TRANSIENT_HINTS)):
        # A model that is not loaded (yet) or a server still starting: retry later.
        return TritonTransientError(text)
    return TritonPermanentError(text)


class TritonClient:
    """One gRPC channel to a Triton server; all calls raise TransientError or PermanentError."""

    def __init__(self, url: str, connect_backoff_ms: int = 500,
                 shared_memory_min_bytes: int | None = None) -> None:
        """`shared_memory_min_bytes`: requests whose inputs reach this size go through system
        shared memory (None: 4 MiB when Triton is on a loopback address, else never; 0: never).
        If Triton cannot map the region (another host after all), the client falls back to
        sending tensors in the request and stays there."""
        self.url = url
        if shared_memory_min_bytes is None:
            shared_memory_min_bytes = SHM_MIN_BYTES if triton_shm.same_host(url) else 0
        self.shm_min_bytes = shared_memory_min_bytes
        self.shm_requests = 0  # requests whose inputs went through shared memory
        self._pool = triton_shm.RegionPool()
        self._swept = False
        self._client = InferenceServerClient(url, channel_args=[
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            # Reconnect quickly after a Triton restart instead of gRPC's default 1 s → 120 s.
            ("grpc.initial_reconnect_backoff_ms", connect_backoff_ms),
            ("grpc.min_reconnect_backoff_ms", connect_backoff_ms),
            ("grpc.max_reconnect_backoff_ms", max(connect_backoff_ms, 2000)),
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.keepalive_timeout_ms", 10_000),
        ])

    async def close(self) -> None:
        for region in self._pool.drain():
            await self._release(region)
        await self._client.close()

    async def __aenter__(self) -> TritonClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def infer(self, model: str, inputs: dict[str, np.ndarray], outputs: list[str],
                    deadline_s: float, version: str = "") -> dict[str, np.ndarray]:
        """One inference; returns every requested output as a numpy array."""
        arrays = {name: np.ascontiguousarray(array) for name, array in inputs.items()}
        if not (self.shm_min_bytes and triton_shm.total_bytes(arrays) >= self.shm_min_bytes):
            return await self._infer(model, arrays, outputs, deadline_s, version, None)
        await self._sweep_orphans()
        size = triton_shm.layout(arrays)[1]
        for reused in (True, False):
            region = self._pool.take(size) if reused else None
            if reused and region is None:
                continue
            if region is None:
                region = await asyncio.to_thread(triton_shm.allocate, size)
                if not await self._register(region, model):
                    return await self._infer(model, arrays, outputs, deadline_s, version, None)
            kept = False
            try:
                await asyncio.to_thread(triton_shm.fill, region, arrays)
                self.shm_requests += 1
                result = await self._infer(model, arrays, outputs, deadline_s, version, region)
                kept = True
                return result
            except (TransientError, PermanentError):
                if reused and not await self._registered(region.name):
                    log.info("triton forgot shared memory region %s (restarted?); sending "
                             "the request again in a new region", region.name)
                    continue
                raise
            finally:
                if kept:
                    for evicted in self._pool.give_back(region):
                        await self._release(evicted)
                else:
                    await self._release(region)
        raise AssertionError("unreachable: the second pass always returns or raises")

    async def _register(self, region: triton_shm.Region, model: str) -> bool:
        """Registers the region with Triton; False (and no more shared memory) if Triton
        cannot map it, e.g. because it runs on another machine. The region is destroyed
        unless it was registered."""
        try:
            await self._client.register_system_shared_memory(region.name, region.key,
                                                             region.size, client_timeout=10.0)
            return True
        except BaseException as exc:
            triton_shm.destroy_region(region)
            if isinstance(exc, asyncio.CancelledError):
                raise
            error = classify(exc, model)
            if isinstance(error, TransientError):
                raise error from exc
            log.warning("triton cannot map system shared memory (%s); sending tensors in "
                        "the request from now on", exc)
            self.shm_min_bytes = 0
            return False

    async def _registered(self, name: str) -> bool:
        try:
            await self._client.get_system_shared_memory_status(region_name=name,
                                                               client_timeout=5.0)
            return True
        except Exception:
            return False

    async def _release(self, region: triton_shm.Region) -> None:
        """Unregisters the region from Triton and destroys it."""
        try:
            await self._client.unregister_system_shared_memory(region.name, client_timeout=30.0)
        except Exception as exc:  # Triton forgets it on restart; the memory is ours to free
            log.warning("unregistering shared memory %s from triton failed: %s", region.name, exc)
        triton_shm.destroy_region(region)

    async def _sweep_orphans(self) -> None:
        """Once per client: frees the regions of sidecar processes that were killed before
        they could (in /dev/shm and in Triton), so killed workers do not leak memory."""
        if self._swept:
            return
        self._swept = True
        for key in triton_shm.orphaned_keys():
            triton_shm.unlink_key(key)
            log.info("removed shared memory %s left by a process that no longer runs", key)
        try:
            status = await self._client.get_system_shared_memory_status(client_timeout=5.0)
            names = list(status.regions)
        except Exception:
            return
        for name in names:
            if not triton_shm.owner_alive(name):
                with contextlib.suppress(Exception):
                    await self._client.unregister_system_shared_memory(name, client_timeout=10.0)
                    log.info("unregistered shared memory %s left in triton by a process that "
                             "no longer runs", name)

    async def _infer(self, model: str, arrays: dict[str, np.ndarray], outputs: list[str],
                     deadline_s: float, version: str,
                     region: triton_shm.Region | None) -> dict[str, np.ndarray]:
        request_inputs = []
        for name, array in arrays.items():
            tensor = InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
            if region is None or name not in region.offsets:
                tensor.set_data_from_numpy(array)
            else:
                offset, nbytes = region.offsets[name]
                tensor.set_shared_memory(region.name, nbytes, offset)
            request_inputs.append(tensor)
        requested = [InferRequestedOutput(name) for name in outputs]
        try:
            result = await self._client.infer(model, request_inputs, model_version=version,
                                              outputs=requested, client_timeout=deadline_s)
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                raise
            error = classify(exc, model)
            if isinstance(error, TransientError) and "StatusCode.NOT_FOUND" in str(
                    getattr(exc, "status", lambda: "")()):
                # Not loaded yet, or not there at all? Only the second is a configuration error.
                missing = await self._missing_from_repository(model)
                if missing is not None:
                    raise TritonPermanentError(missing) from exc
            raise error from exc
        decoded: dict[str, np.ndarray] = {}
        for name in outputs:
            try:
                array = result.as_numpy(name)
            except Exception as exc:  # a raw buffer that does not fit its shape and datatype
                raise TritonPermanentError(f"triton output {name} of {model} cannot be "
                                           f"decoded: {exc}") from exc
            if array is None:
                raise TritonPermanentError(f"triton returned no output {name} for {model}")
            decoded[name] = array
        return decoded

    async def _missing_from_repository(self, model: str, timeout_s: float = 2.0) -> str | None:
        """Why `model` is a configuration error (it is in none of Triton's model repositories),
        or None when it is there (loading, unloaded) or the index cannot be read now."""
        try:
            index = await self._client.get_model_repository_index(client_timeout=timeout_s)
        except Exception:
            return None
        names = sorted({m.name for m in index.models})
        if model in names:
            return None
        return (f"triton NOT_FOUND for {model}: no model of that name in Triton's model "
                f"repository (it has: {', '.join(names) or 'none'}); check triton_model in "
                "the model registry")

    async def model_version(self, model: str, timeout_s: float = 5.0) -> str:
        """The model's declared version (config parameter `model_version`, e.g.
        "reference-1.0.0"), else the highest ready version number ("1")."""
        index = await self._call(model, self._client.get_model_repository_index(
            client_timeout=timeout_s))
        ready = [m.version for m in index.models
                 if m.name == model and m.state == "READY" and m.version]
        if not ready:
            raise TritonTransientError(f"triton has no ready version of {model}")
        config = await self._call(model, self._client.get_model_config(
            model, as_json=True, client_timeout=timeout_s))
        declared = (config.get("config", {}).get("parameters", {}).get("model_version", {})
                    .get("string_value", ""))
        return str(declared) or max(ready, key=lambda v: int(v) if v.isdigit() else -1)

    async def is_ready(self, timeout_s: float = 2.0) -> bool:
        """Server liveness and readiness; False instead of raising when it cannot be reached."""
        try:
            return bool(await self._client.is_server_ready(client_timeout=timeout_s))
        except Exception:
            return False

    async def is_model_ready(self, model: str, version: str = "", timeout_s: float = 2.0) -> bool:
        try:
            return bool(await self._client.is_model_ready(model, version,
                                                          client_timeout=timeout_s))
        except Exception:
            return False

    async def model_metadata(self, model: str, timeout_s: float = 5.0) -> dict[str, Any]:
        """Input/output names, datatypes and shapes as Triton reports them."""
        meta = await self._call(model, self._client.get_model_metadata(
            model, as_json=True, client_timeout=timeout_s))
        return dict(meta)

    async def _call(self, model: str, coro: Any) -> Any:
        try:
            return await coro
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise classify(exc, model) from exc


def triton_dtype(datatype: str) -> np.dtype[Any]:
    """The numpy dtype of a Triton datatype string (FP32 → float32)."""
    dtype = triton_to_np_dtype(datatype)
    if dtype is None:
        raise ValueError(f"unknown Triton datatype {datatype!r}")
    return np.dtype(dtype)
