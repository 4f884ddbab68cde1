"""Benchmarks `sidecar up`: last instance acknowledged → findings visible in the gateway API."""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import httpx
import numpy as np
import pydicom
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench.stack, run as a script

from protos.sidecar.ingest.v1 import ingest_service_pb2 as pb  # noqa: E402
from protos.sidecar.ingest.v1 import ingest_service_pb2_grpc as pb_grpc  # noqa: E402
from sidecar_synth import generate  # noqa: E402

MAX_MESSAGE = 64 * 1024 * 1024
MODES = ("complete", "association", "quiet")


@dataclass
class Run:
    mode: str
    seconds: float
    stages: dict[str, float] = field(default_factory=dict)
    findings: int = 0
    timeline: list[tuple[float, str]] = field(default_factory=list)  # (s after ack, event)
    triton: dict[str, float] = field(default_factory=dict)  # ms inside Triton in this run
    preprocess: dict[str, float] = field(default_factory=dict)  # ms per preprocess stage


def renamed(datasets: list[Dataset]) -> tuple[str, str, list[bytes]]:
    """The study with fresh Study/Series/SOP UIDs and accession: (uid, accession, files)."""
    study_uid, series_uid = generate_uid(), generate_uid()
    accession = f"E2E{time.time_ns() % 10**12}"
    files = []
    for ds in datasets:
        sop = generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.AccessionNumber = (
            study_uid, series_uid, accession)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = sop
        buffer = io.BytesIO()
        pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
        files.append(buffer.getvalue())
    return study_uid, accession, files


def when(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def store_by_dimse(files: list[bytes], calling_ae: str, port: int) -> tuple[float, float]:
    """C-STOREs the files on one association to the sidecar's DICOM port, as a PACS does;
    returns (monotonic, wall) time of the last instance's acknowledgement, then releases."""
    from pynetdicom import AE

    parsed = [pydicom.dcmread(io.BytesIO(data)) for data in files]
    ae = AE(ae_title=calling_ae[:16])
    for cls, syntax in {(str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID))
                        for ds in parsed}:
        ae.add_requested_context(cls, syntax)
    assoc = ae.associate("127.0.0.1", port, ae_title="SIDECAR")
    if not assoc.is_established:
        raise RuntimeError(f"association to 127.0.0.1:{port} as {calling_ae} refused")
    try:
        for ds in parsed:
            status = assoc.send_c_store(ds)
            if not status or status.Status != 0x0000:
                raise RuntimeError(f"C-STORE answered {status}")
        acknowledged, acknowledged_wall = time.monotonic(), time.time()
    finally:
        assoc.release()
    return acknowledged, acknowledged_wall


def one_run(mode: str, facility: str, datasets: list[Dataset],
            ingest: pb_grpc.IngestServiceStub, http: httpx.Client, metrics_port: int = 0,
            preprocess_port: int = 0, timeout: float = 180.0, dicom_port: int = 0) -> Run:
    before = triton_server_ms(metrics_port) if metrics_port else {}
    stages_before = preprocess_ms(preprocess_port) if preprocess_port else {}
    study_uid, accession, files = renamed(datasets)
    if mode == "association":  # C-STORE on one association; complete on its release
        acknowledged, acknowledged_wall = store_by_dimse(files, facility.upper(), dicom_port)
    else:
        requests = [pb.UploadInstancesRequest(facility=facility if i == 0 else "", dicom=data,
                                              source_ref=str(i)) for i, data in enumerate(files)]
        response = ingest.UploadInstances(iter(requests), timeout=120)
        acknowledged, acknowledged_wall = time.monotonic(), time.time()
        if response.stored_count != len(files):
            raise RuntimeError(f"ingest stored {response.stored_count} of {len(files)}")
    if mode == "complete":
        ingest.CompleteStudy(pb.CompleteStudyRequest(facility=facility,
                                                     study_instance_uid=study_uid), timeout=30)
    study_id = ""
    deadline = acknowledged + timeout
    while time.monotonic() < deadline:
        if not study_id:
            studies = http.get("/api/v1/studies", params={"accession": accession}).json()
            study_id = studies["studies"][0]["id"] if studies["studies"] else ""
        if study_id:
            findings = http.get(f"/api/v1/studies/{study_id}/findings").json()["findings"]
            if findings:
                run = Run(mode, time.monotonic() - acknowledged, findings=len(findings))
                visible_wall = time.time()
                break
        time.sleep(0.05)
    else:
        raise TimeoutError(f"no findings for {accession} within {timeout:.0f} s")
    history = {h["state"]: when(h["at"]) for h in
               http.get(f"/api/v1/studies/{study_id}").json()["state_history"]}
    marks = [("ack→received", acknowledged_wall, history.get("received")),
             ("preprocess", history.get("received"), history.get("processed")),
             ("ai", history.get("processed"), history.get("ready_for_review")),
             ("→visible", history.get("ready_for_review"), visible_wall)]
    run.stages = {name: (b - a) for name, a, b in marks if a is not None and b is not None}
    events = http.get(f"/api/v1/studies/{study_id}/audit", params={"page_size": 500}).json()
    run.timeline = sorted((when(e["at"]) - acknowledged_wall, _label(e))
                          for e in events["events"] if e["at"])
    run.timeline.append((visible_wall - acknowledged_wall, "(findings visible to the poller)"))
    if metrics_port:
        after = triton_server_ms(metrics_port)
        run.triton = {k: v - before.get(k, 0.0) for k, v in after.items()}
    if preprocess_port:
        time.sleep(0.5)  # the display stage ends after the findings; let it record
        stages = preprocess_ms(preprocess_port)
        run.preprocess = {k: v - stages_before.get(k, 0.0) for k, v in stages.items()}
    return run


def _label(event: dict) -> str:
    """The event type, with the state reached or the normalizer's own latencies."""
    context = event.get("context") or {}
    if "to_state" in context:
        return f"{event['type']} → {context['to_state']}"
    if "latency_ms" in context:
        parts = ", ".join(f"{k} {v:.0f}" for k, v in context["latency_ms"].items())
        return f"{event['type']} (ms: {parts})"
    return str(event["type"])


def print_timeline(run: Run) -> None:
    """The study's audit events after the acknowledgement: where the overhead goes."""
    print(f"\naudit timeline of the last {run.mode} run (s after the last instance was "
          "acknowledged; gap = since the previous event)")
    previous = 0.0
    for at, event in run.timeline:
        if at < -0.5:
            continue
        print(f"  {at:7.3f}  +{at - previous:6.3f}  {event}")
        previous = max(previous, at)


def raw_inference_ms(datasets: list[Dataset], triton_url: str, repeat: int = 3
                     ) -> dict[str, float]:
    """Median time of one chest_ct_nodules request on the same study's model input, with the
    normalizer's own client: inputs through system shared memory (as the sidecar sends them)
    and in the request (gRPC bytes), each after a warm-up request."""
    import asyncio

    from normalizer_svc.triton import TritonClient
    from sidecar_core.pixels.volume import build_model_input

    model_input = build_model_input(datasets)
    inputs = {"VOLUME": np.ascontiguousarray(model_input.volume, dtype=np.float32),
              "SPACING": model_input.spacing_zyx}

    async def timed(shm_min_bytes: int) -> float:
        async with TritonClient(triton_url, shared_memory_min_bytes=shm_min_bytes) as client:
            times = []
            for i in range(repeat + 1):
                t0 = time.perf_counter()
                await client.infer("chest_ct_nodules", inputs, ["BOXES", "SCORES"], 300)
                if i:  # the first request warms the model up
                    times.append((time.perf_counter() - t0) * 1000)
            return statistics.median(times)

    return {"shm": asyncio.run(timed(1)), "wire": asyncio.run(timed(0))}


def _samples(metrics_port: int) -> list[Sample]:
    """Every sample a Prometheus endpoint on this machine serves (prometheus-client's parser,
    which names a counter's samples `<name>_total`; the suffix is dropped here again)."""
    text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
    return [s._replace(name=s.name.removesuffix("_total"))
            for family in text_string_to_metric_families(text) for s in family.samples]


def preprocess_ms(metrics_port: int) -> dict[str, float]:
    """The preprocess worker's cumulative time per stage (ms), from its Prometheus histogram,
    and its early decode's instance counts (`early <outcome>`: decoded, hit, miss)."""
    samples = _samples(metrics_port)
    return {**{s.labels["stage"]: s.value * 1000 for s in samples
               if s.name == "sidecar_preprocess_seconds_sum"},
            **{f"early {s.labels['outcome']}": s.value for s in samples
               if s.name == "sidecar_early_decode_instances"}}


def triton_server_ms(metrics_port: int) -> dict[str, float]:
    """Triton's own cumulative time (ms) for chest_ct_nodules, from its Prometheus counters;
    the difference around a run is what Triton spent of what the sidecar waited."""
    return {s.name.removeprefix("nv_inference_").removesuffix("_duration_us"): s.value / 1000
            for s in _samples(metrics_port)
            if s.name.startswith("nv_inference_") and s.name.endswith("_duration_us")
            and s.labels.get("model") == "chest_ct_nodules"}


def sidecar_own(run: Run) -> float:
    """ack→findings minus the time Triton spent on this run's requests (nan without metrics)."""
    inside = run.triton.get("request")
    return run.seconds - inside / 1000 if inside else float("nan")


def print_table(runs: list[Run], raw: dict[str, float], volume: str) -> None:
    raw_ms = raw["shm"]
    stages = ["ack→received", "preprocess", "ai", "→visible"]
    header = (f"{'run':>3} {'completion':<24} {'ack→findings s':>14} {'overhead s':>10} "
              f"{'in Triton s':>11} {'own s':>6}  "
              + "  ".join(f"{s:>12}" for s in stages) + f"  {'findings':>8}")
    print(f"\nchest CT {volume}, last instance acknowledged → findings visible in the gateway API")
    print(header)
    print("-" * len(header))
    labels = {"complete": "CompleteStudy RPC", "association": "C-STORE, assoc. release",
              "quiet": "5 s quiet period"}
    for mode in MODES:
        mine = [r for r in runs if r.mode == mode]
        if not mine:
            continue
        for i, r in enumerate(mine, 1):
            cells = "  ".join(f"{r.stages.get(s, float('nan')):>12.2f}" for s in stages)
            inside = r.triton.get("request", float("nan")) / 1000
            print(f"{i:>3} {labels[mode]:<24} {r.seconds:>14.2f} "
                  f"{r.seconds - raw_ms / 1000:>10.2f} {inside:>11.2f} {sidecar_own(r):>6.2f}  "
                  f"{cells}  {r.findings:>8}")
        median = statistics.median(r.seconds for r in mine)
        own = statistics.median(sidecar_own(r) for r in mine)
        print(f"{'med':>3} {labels[mode]:<24} {median:>14.2f} {median - raw_ms / 1000:>10.2f} "
              f"{'':>11} {own:>6.2f}  (= {median * 1000 / raw_ms:.1f}× the raw Triton inference)")
    print(f"\nbaseline: raw Triton inference of the same study (chest_ct_nodules, {volume}, "
          f"median of 3 warm requests): {raw_ms:.0f} ms with the volume in system shared "
          f"memory, {raw['wire']:.0f} ms with it in the gRPC request")
    print("overhead = ack→findings minus the shared-memory raw inference (the issue's figure); "
          "own = ack→findings minus\nthe time Triton itself spent on that run's request "
          "(its nv_inference_request_duration_us counter), which\ndoes not move with the "
          "model's own run-to-run spread")


def main() -> None:
    """Starts ``sidecar up`` as a user does (bench/stack.py: subprocess, fresh data dir, free
    loopback ports; or reuses the one on ``--stack DATA_DIR``), registers two facilities of its
    own (one completing studies only on CompleteStudy, one on the default 5 s quiet period) and
    an admin, then sends a 100-slice 512×512 synthetic chest CT through the Ingest RPC, each
    repetition with fresh UIDs. Times from the UploadInstances acknowledgement to the first
    poll of ``/api/v1/studies/{id}/findings`` that returns findings, splits that by the stored
    state history, and compares the median with the same study's raw Triton inference alone
    (the baseline, measured in the same run).

    Run: ``.venv/bin/python -m bench.end_to_end [--repeat 3] [--slices 100] [--size 512]``;
    ``--smoke``: one 40×256² run (the smallest the chest CT model takes), CompleteStudy only.
    """
    from bench.stack import add_arguments

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--repeat", type=int, default=3, help="runs per completion mode")
    parser.add_argument("--slices", type=int, default=100)
    parser.add_argument("--size", type=int, default=512, help="rows and columns")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--keep", action="store_true", help="keep the data dir and logs")
    parser.add_argument("--triton-url", default="",
                        help="use this running Triton (host:port) instead of the embedded one")
    parser.add_argument("--modes", default="complete,association,quiet",
                        help="completion modes to time: complete (the Ingest RPC, then "
                        "CompleteStudy), association (C-STORE on one association, complete on "
                        "its release), quiet (the Ingest RPC, then a 5 s quiet period)")
    parser.add_argument("--early-decode", choices=("on", "off", "both"), default="on",
                        help="on: decode instances on arrival and sync the model input "
                             "beside inference (the defaults); off: as before issue 22 item 1 "
                             "(the preprocess job reads and decodes every instance at "
                             "completion and writes the model input durably before announcing "
                             "it: SIDECAR_DECODE_CACHE_MB=0, "
                             "SIDECAR_MODEL_INPUT_DURABLE_FIRST=true); both: a stack each, "
                             "off first, their tables side by side")
    add_arguments(parser)
    args = parser.parse_args()
    if args.smoke:
        args.repeat, args.slices, args.size, args.modes = 1, 40, 256, "complete"

    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmp:
        t0 = time.perf_counter()
        truth = generate("chest-ct", Path(tmp) / "study", args.seed, slices=args.slices,
                         rows=args.size, cols=args.size)
        datasets = [pydicom.dcmread(Path(tmp) / "study" / name) for name in truth.files]
    variants = {"on": ["on"], "off": ["off"], "both": ["off", "on"]}[args.early_decode]
    results = []
    for variant in variants:
        print(f"\n=== early decode {variant} ===", flush=True)
        env = {"SIDECAR_TRITON_URL": args.triton_url} if args.triton_url else {}
        if variant == "off":  # as before issue 22 item 1
            env["SIDECAR_DECODE_CACHE_MB"] = "0"
            env["SIDECAR_MODEL_INPUT_DURABLE_FIRST"] = "true"
        results.append((variant, *bench_stack(args, datasets, env)))
    for variant, runs, raw in results:
        print(f"\n=== early decode {variant} ===")
        report(args, runs, raw)
    if len(results) == 2:
        print_comparison(results)
    print(f"\ntotal bench time {time.perf_counter() - t0:.0f} s; load average at the end "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")


def print_comparison(results: list[tuple[str, list[Run], dict[str, float]]]) -> None:
    """The medians with early decode off (the baseline) and on, side by side."""
    print("\nearly decode off (baseline) vs on, medians (s)")
    print(f"{'completion':<20} {'':>4} {'ack→findings':>12} {'overhead':>9} {'own':>6} "
          f"{'preprocess':>10} {'raw shm':>8}")
    for mode in MODES:
        for variant, runs, raw in results:
            mine = [r for r in runs if r.mode == mode]
            if not mine:
                continue
            total = statistics.median(r.seconds for r in mine)
            preprocess = statistics.median(r.stages.get("preprocess", float("nan"))
                                           for r in mine)
            print(f"{mode:<20} {variant:>4} {total:>12.2f} {total - raw['shm'] / 1000:>9.2f} "
                  f"{statistics.median(sidecar_own(r) for r in mine):>6.2f} "
                  f"{preprocess:>10.2f} "
                  f"{raw['shm'] / 1000:>8.2f}")


def bench_stack(args: argparse.Namespace, datasets: list[Dataset], env: dict[str, str]
                ) -> tuple[list[Run], dict[str, float]]:
    """One `sidecar up` (or the one of --stack): the warm-up and the timed runs, then the raw
    inference baseline on the same Triton."""
    from bench.stack import sidecar_up

    runs: list[Run] = []
    with sidecar_up(args.stack, env=env or None, keep=args.keep) as stack:
        facilities = {"complete": stack.add_facility("e2e", "--completion", "explicit"),
                      "association": stack.add_facility("e2e_assoc", "--completion",
                                                        "association", "--settle", "0"),
                      "quiet": stack.add_facility("e2e_quiet", "--quiet-period", "5")}
        token = stack.login(stack.add_user("admin", prefix="e2e"))
        triton_url = stack.runtime()["triton_url"]
        own_triton = triton_url == stack.address("triton")
        channel = stack.channel("ingest", options=[
            ("grpc.max_send_message_length", MAX_MESSAGE),
            ("grpc.max_receive_message_length", MAX_MESSAGE)])
        ingest = pb_grpc.IngestServiceStub(channel)
        with httpx.Client(base_url=stack.base_url, timeout=30,
                          headers={"Authorization": f"Bearer {token}"}) as http:
            metrics = stack.ports["triton-metrics"] if own_triton else 0
            # warm-up: first requests, caches
            one_run("complete", facilities["complete"], datasets, ingest, http)
            for mode in [m for m in MODES if m in args.modes.split(",")]:
                for _ in range(args.repeat):
                    runs.append(one_run(mode, facilities[mode], datasets, ingest, http, metrics,
                                        stack.ports["preprocess-metrics"],
                                        dicom_port=stack.ports["dicom"]))
        channel.close()
        raw = raw_inference_ms(datasets, triton_url)
    return runs, raw


def report(args: argparse.Namespace, runs: list[Run], raw: dict[str, float]) -> None:
    print_table(runs, raw, f"{args.slices}×{args.size}×{args.size}")
    for i, r in enumerate(runs, 1):
        print(f"run {i} inside Triton (ms): "
              + ", ".join(f"{k} {v:.0f}" for k, v in r.triton.items() if v)
              + "; preprocess worker (ms): "
              + ", ".join(f"{k} {v:.0f}" for k, v in r.preprocess.items()
                          if v and not k.startswith("early "))
              + "; instances decoded on arrival / taken decoded by the job / read by it: "
              + " / ".join(f"{r.preprocess.get(f'early {k}', 0):.0f}"
                           for k in ("decoded", "hit", "miss")))
    if runs:
        print_timeline(runs[-1])


if __name__ == "__main__":
    main()
