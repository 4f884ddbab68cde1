"""Benchmark: the gateway's DICOMweb (WADO-RS) vs Orthanc's DICOMweb plugin, same CT, one run.

Run: .venv/bin/python bench/dicomweb.py [--slices 300] [--size 512] [--stack DATA_DIR] [--smoke]
Both servers get the same synthetic chest CT (`sidecar_synth`, 300 slices of 512x512) over
DIMSE (dcmtk storescu). Orthanc 1.10 + orthanc-dicomweb runs in a private network namespace with
only loopback; the sidecar is `sidecar up` as a user starts it (bench/stack.py: fresh data dir,
free loopback ports; or the one running on `--stack DATA_DIR`), the CT sent to a facility of
this bench and read once the study is ready for review (its AI run done, the machine quiet
again). One client program (this file with --client, inside Orthanc's namespace for Orthanc)
measures, the way OHIF asks:
  - series metadata: the first request (cold: the sidecar builds its series index) and the
    median of 20 more;
  - frames: every instance's frame 1, 6 requests at a time,
    `multipart/related; type="application/octet-stream"; transfer-syntax=*`; frames/s;
  - rendered thumbnails: every instance's `/rendered?viewport=128,128` as image/jpeg, 6 at a
    time; images/s.
`--smoke`: a 12-slice 64x64 CT, 3 warm metadata requests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FRAME_ACCEPT = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
CONCURRENCY = 6
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"


# --- the client (runs in a subprocess, in Orthanc's namespace for Orthanc) -------------------

async def _client(root: str, study: str, series: str, token: str,
                  warm_n: int = 20) -> dict[str, Any]:
    import httpx

    # identity: Orthanc's default configuration gzips responses for clients that accept it
    # (about 10x fewer frames/s here); compression is left out on both sides
    headers = {"Accept-Encoding": "identity",
               **({"Authorization": f"Bearer {token}"} if token else {})}
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    transport = httpx.AsyncHTTPTransport(  # as browsers and curl do
        limits=limits, socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
    async with httpx.AsyncClient(base_url=root, headers=headers, timeout=120,
                                 transport=transport) as http:
        path = f"/studies/{study}/series/{series}"
        t0 = time.perf_counter()
        reply = await http.get(path + "/metadata", headers={"Accept": "application/dicom+json"})
        cold = time.perf_counter() - t0
        reply.raise_for_status()
        sops = [m["00080018"]["Value"][0] for m in reply.json()]
        warm = []
        for _ in range(warm_n):
            t0 = time.perf_counter()
            (await http.get(path + "/metadata")).raise_for_status()
            warm.append(time.perf_counter() - t0)

        async def fetch_all(suffix: str, accept: str) -> float:
            queue = list(sops)
            sizes: list[int] = []

            async def worker() -> None:
                while queue:
                    sop = queue.pop()
                    r = await http.get(f"{path}/instances/{sop}{suffix}",
                                       headers={"Accept": accept})
                    r.raise_for_status()
                    sizes.append(len(r.content))

            t0 = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
            elapsed = time.perf_counter() - t0
            assert len(sizes) == len(sops)
            return len(sops) / elapsed

        frames = await fetch_all("/frames/1", FRAME_ACCEPT)
        rendered = await fetch_all("/rendered?viewport=128,128", "image/jpeg")
    return {"instances": len(sops), "metadata_cold_ms": cold * 1000,
            "metadata_warm_ms": statistics.median(warm) * 1000, "frames_per_s": frames,
            "rendered_per_s": rendered}


def client_main(args: argparse.Namespace) -> int:
    print(json.dumps(asyncio.run(_client(args.root, args.study, args.series, args.token,
                                         args.warm))))
    return 0


def measure(root: str, study: str, series: str, token: str = "",
            prefix: list[str] | None = None, warm: int = 20) -> dict[str, Any]:
    out = subprocess.run([*(prefix or []), sys.executable, __file__, "--client", "--root", root,
                          "--study", study, "--series", series, "--token", token,
                          "--warm", str(warm)],
                         capture_output=True, text=True, check=False, cwd=ROOT)
    if out.returncode != 0:
        raise RuntimeError(f"client failed: {out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


# --- the servers -----------------------------------------------------------------------------

FINAL = {"ready_for_review", "ineligible", "preprocess_failed", "ai_failed"}


def fresh_ct(work: Path, slices: int, size: int) -> tuple[Path, str, str]:
    """The synthetic chest CT with fresh Study/Series/SOP UIDs and accession (a bench sharing
    a stack with others never sends a study twice): (folder, study UID, series UID)."""
    import pydicom
    from pydicom.uid import generate_uid

    from sidecar_synth import generate

    folder = work / "ct"
    folder.mkdir(parents=True)
    generate("chest-ct", work / "synth", seed=7, slices=slices, rows=size, cols=size)
    study, series = generate_uid(), generate_uid()
    accession = f"DW{time.time_ns() % 10**12}"
    for path in sorted((work / "synth").glob("*.dcm")):
        ds = pydicom.dcmread(path)
        sop = generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.AccessionNumber = study, series, accession
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = sop
        ds.save_as(folder / path.name, enforce_file_format=True)
    return folder, study, series


def _sidecar(stack: Any, folder: Path, study: str, timeout: float = 600.0) -> str:
    """Sends the CT to a new facility of this bench on the running stack and waits until the
    study is in a final state; returns an admin's access token."""
    import httpx

    from bench.ingest_vs_orthanc import storescu

    facility = stack.add_facility("dicomweb", "--completion", "association")
    token = str(stack.login(stack.add_user("admin", prefix="dicomweb")))
    storescu(stack.ports["dicom"], "SIDECAR", folder, aet=facility.upper())
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=stack.base_url, timeout=30,
                      headers={"Authorization": f"Bearer {token}"}) as http:
        while True:
            found = http.get("/api/v1/studies", params={"facility": facility}).json()["studies"]
            states = [s["state"] for s in found if s.get("study_instance_uid", study) == study]
            if states and states[0] in FINAL:
                print(f"sidecar: study {states[0]}", flush=True)
                return token
            if time.monotonic() > deadline:
                raise TimeoutError(f"study not final in {timeout:.0f} s: {states}")
            time.sleep(0.5)


def _orthanc(work: Path, folder: Path) -> Any:
    """Orthanc with the DICOMweb plugin, in its own network namespace, holding the CT."""
    from bench.ingest_vs_orthanc import NODELAY, ORTHANC, Orthanc, storescu

    orthanc = Orthanc(work)
    storage = work / "orthanc"
    orthanc.start(storage)  # creates the namespace and the config; restarted with the plugin
    orthanc.stop()
    cfg = json.loads((storage / "orthanc.json").read_text())
    cfg.update(Plugins=[DICOMWEB_PLUGIN], DicomWeb={"Enable": True, "Root": "/dicom-web/"})
    (storage / "orthanc.json").write_text(json.dumps(cfg))
    orthanc.proc = subprocess.Popen([*orthanc.prefix, ORTHANC, str(storage / "orthanc.json")],
                                    env={**os.environ, **NODELAY}, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while subprocess.run([*orthanc.prefix, "/usr/bin/echoscu", "-aec", "ORTHANC", "127.0.0.1",
                          str(orthanc.port)], capture_output=True).returncode != 0:
        if time.monotonic() > deadline:
            raise RuntimeError("Orthanc did not start")
        time.sleep(0.2)
    storescu(orthanc.port, "ORTHANC", folder, orthanc.prefix)
    return orthanc


def main(argv: list[str] | None = None) -> int:
    from bench.stack import add_arguments, sidecar_up

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--root", default="")
    ap.add_argument("--study", default="")
    ap.add_argument("--series", default="")
    ap.add_argument("--token", default="")
    ap.add_argument("--warm", type=int, default=20, help=argparse.SUPPRESS)
    ap.add_argument("--slices", type=int, default=300)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--work", type=Path, default=None)
    add_arguments(ap)
    args = ap.parse_args(argv)
    if args.client:
        return client_main(args)
    if args.smoke:
        args.slices, args.size, args.warm = 12, 64, 3
    if not Path(DICOMWEB_PLUGIN).exists():
        subprocess.run(["apt-get", "install", "-y", "orthanc", "orthanc-dicomweb", "dcmtk"],
                       check=True)
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-dicomweb-"))
    try:
        folder, study, series = fresh_ct(work, args.slices, args.size)
        print(f"{args.slices} x {args.size}² CT in {folder}", flush=True)
        orthanc = _orthanc(work, folder)
        try:
            theirs = measure(f"http://127.0.0.1:{orthanc.http}/dicom-web", study, series,
                             prefix=orthanc.prefix, warm=args.warm)
        finally:
            orthanc.close()
        with sidecar_up(args.stack) as stack:
            token = _sidecar(stack, folder, study)
            ours = measure(f"{stack.base_url}/dicomweb", study, series, token, warm=args.warm)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    print(f"{'':28}{'sidecar':>12}{'Orthanc':>12}{'ratio':>10}")
    rows = [("series metadata, cold (ms)", "metadata_cold_ms", False),
            ("series metadata, warm (ms)", "metadata_warm_ms", False),
            ("frames/s (6 concurrent)", "frames_per_s", True),
            ("rendered 128px/s (6 conc.)", "rendered_per_s", True)]
    for label, key, higher_better in rows:
        ratio = ours[key] / theirs[key] if higher_better else theirs[key] / ours[key]
        print(f"{label:28}{ours[key]:12.1f}{theirs[key]:12.1f}{ratio:9.2f}x")
    print("(ratio > 1: the sidecar is better; latency ratios are Orthanc / sidecar)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
