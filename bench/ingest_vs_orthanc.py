"""Benchmark: dcmtk storescu into the sidecar's C-STORE SCP vs into Orthanc, same files, same host.

Run: .venv/bin/python bench/ingest_vs_orthanc.py [--runs 3] [--rss-instances 1000]
Workloads: a 300-slice 512x512 CT (0.5 MB/slice) and 100 small 64x64 instances, one association
each; optionally (--workloads ...,ct-4x100x512) four 100-slice CTs over four associations at
once; or (resend-300x512) the CT sent twice, timing the second send, where every instance
is a duplicate (a PACS retrying a study). Every run uses
fresh UIDs, so neither side short-circuits duplicates. The sidecar's C-STORE success means the
object and its index row are durable, so storescu's wall time counts only durable instances.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.helpers import add_facility  # noqa: E402
from tests.servers import free_port, nats_server, wait_port  # noqa: E402

STORESCU = "/usr/bin/storescu"
ORTHANC = "/usr/sbin/Orthanc"
CALLING_AE = "BENCH"
NODELAY = {"TCP_NODELAY": "1"}


def write_series(folder: Path, pixels: list[np.ndarray], tag: str) -> None:
    """One study, one series; pixel arrays reused, UIDs fresh."""
    folder.mkdir(parents=True)
    study, series = generate_uid(), generate_uid()
    for i, px in enumerate(pixels):
        meta = FileMetaDataset()
        sop = generate_uid()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CTImageStorage, sop
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, sop
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.AccessionNumber, ds.Modality, ds.PatientID = f"B{tag}"[:16], "CT", "BENCH"
        ds.PatientName, ds.StudyDate, ds.SeriesNumber = "Bench^Patient", "20240101", 1
        ds.InstanceNumber, ds.ImagePositionPatient = i + 1, [0, 0, float(i)]
        ds.ImageOrientationPatient, ds.PixelSpacing = [1, 0, 0, 0, 1, 0], [0.7, 0.7]
        ds.Rows, ds.Columns = px.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.PixelData = px.tobytes()
        pydicom.dcmwrite(folder / f"{i:05d}.dcm", ds, enforce_file_format=True)


def pixels(n: int, size: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    base = rng.integers(-1024, 2000, (size, size), dtype=np.int16)
    return [np.roll(base, i, axis=0) for i in range(n)]


def storescu(port: int, aec: str, folder: Path, prefix: list[str] | None = None,
             associations: int = 1, aet: str = CALLING_AE) -> float:
    """Wall time of sending `folder` (one association), or of its sub-folders `0..N-1` with one
    storescu (one association) each, all started together."""
    folders = [folder] if associations == 1 else [folder / str(i) for i in range(associations)]
    t0 = time.perf_counter()
    procs = [subprocess.Popen([*(prefix or []), STORESCU, "+sd", "+r", "-aet", aet,
                               "-aec", aec, "127.0.0.1", str(port), str(f)],
                              env={**os.environ, **NODELAY}, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for f in folders]
    outputs = [p.communicate() for p in procs]
    elapsed = time.perf_counter() - t0
    for p, (out, err) in zip(procs, outputs, strict=True):
        if p.returncode != 0 or "E: " in out + err:
            code = p.returncode
            raise RuntimeError(f"storescu failed ({code}): {err[-2000:]}")
    return elapsed


class Orthanc:
    """Orthanc 1.10 in a private network namespace (only loopback), own storage dir."""

    def __init__(self, work: Path) -> None:
        self.work, self.port, self.http = work, 4242, 8042
        self.netns = work / "netns"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def prefix(self) -> list[str]:
        return ["nsenter", f"--net={self.netns}"]

    def start(self, storage: Path) -> None:
        if not self.netns.exists():
            self.netns.touch()
            subprocess.run(["unshare", f"--net={self.netns}", "true"], check=True)
            subprocess.run([*self.prefix, "ip", "link", "set", "lo", "up"], check=True)
        storage.mkdir(parents=True)
        cfg = {"Name": "bench", "StorageDirectory": str(storage / "db"),
               "IndexDirectory": str(storage / "db"), "DicomAet": "ORTHANC",
               "DicomPort": self.port, "HttpPort": self.http, "RemoteAccessAllowed": False,
               "AuthenticationEnabled": False, "DicomCheckCalledAet": False, "Plugins": []}
        (storage / "orthanc.json").write_text(json.dumps(cfg))
        self.proc = subprocess.Popen([*self.prefix, ORTHANC, str(storage / "orthanc.json")],
                                     env={**os.environ, **NODELAY},
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while subprocess.run([*self.prefix, "/usr/bin/echoscu", "-aec", "ORTHANC", "127.0.0.1",
                              str(self.port)], capture_output=True).returncode != 0:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("Orthanc did not start")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(30)
            self.proc = None

    def close(self) -> None:
        self.stop()
        if self.netns.exists():
            subprocess.run(["umount", str(self.netns)], check=False)


class Sidecar:
    """`python -m ingest_svc.main` with embedded PostgreSQL (pgserver) and nats-server."""

    def __init__(self, work: Path, nats_url: str, command: list[str]) -> None:
        import pgserver

        from sidecar_core.store.migrate import upgrade

        self.work, self.nats_url, self.command = work, nats_url, command
        self.pg = pgserver.get_server(work / "pg", cleanup_mode="stop")
        self.url = self.pg.get_uri()
        upgrade(self.url.replace("postgresql://", "postgresql+psycopg://", 1))
        add_facility(self.url, "bench", ae_title=CALLING_AE, quiet_period_s=2.0)
        self.port, self.grpc = free_port(), free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, data_dir: Path) -> None:
        self.port, self.grpc = free_port(), free_port()
        env = {**os.environ, **NODELAY, "SIDECAR_DATABASE_URL": self.url,
               "SIDECAR_NATS_URL": self.nats_url, "SIDECAR_DATA_DIR": str(data_dir),
               "SIDECAR_INGEST_PORT": str(self.grpc), "SIDECAR_DICOM_PORT": str(self.port),
               "SIDECAR_SUBJECT_PREFIX": "bench", "SIDECAR_NATS_STREAM_PREFIX": "BENCH"}
        log = self.work / "ingest.log"
        with log.open("ab") as out:
            self.proc = subprocess.Popen(self.command, cwd=ROOT, env=env, stdout=out,
                                         stderr=out)
        try:
            wait_port(self.grpc, 30)
        except TimeoutError:
            raise RuntimeError("ingest service did not start:\n"
                               + log.read_text()[-3000:]) from None

    def peak_rss_mb(self) -> tuple[float, float]:
        fields = dict(line.split(":", 1) for line in
                      Path(f"/proc/{self.proc.pid}/status").read_text().splitlines())  # type: ignore[union-attr]
        return (int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(60)
            self.proc = None

    def close(self) -> None:
        self.stop()
        self.pg.cleanup()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--rss-instances", type=int, default=1000)
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--workloads", default="ct-300x512,small-100x64",
                    help="comma-separated subset of: ct-300x512, small-100x64, ct-4x100x512 "
                         "(four associations at once, 100 instances each), resend-300x512 "
                         "(the CT sent twice; the second, all-duplicate send is timed)")
    ap.add_argument("--ingest-cmd", default=f"{sys.executable} -m ingest_svc.main",
                    help="command starting the ingest service (A/B test a change)")
    args = ap.parse_args(argv)
    for tool in (STORESCU, ORTHANC):
        if not Path(tool).exists():
            subprocess.run(["apt-get", "install", "-y", "orthanc", "dcmtk"], check=True,
                           stdout=subprocess.DEVNULL)
    work = Path(args.work or tempfile.mkdtemp(prefix="sidecar-bench-"))
    every = {"ct-300x512": (300, 512, 1, False), "small-100x64": (100, 64, 1, False),
             "ct-4x100x512": (100, 512, 4, False), "resend-300x512": (300, 512, 1, True)}
    workloads = {name: every[name] for name in args.workloads.split(",")}
    results: dict[str, dict[str, list[float]]] = {w: {"sidecar": [], "orthanc": []}
                                                   for w in workloads}
    orthanc = Orthanc(work)
    with nats_server() as nats:
        sidecar = Sidecar(work, nats.url, shlex.split(args.ingest_cmd))
        try:
            for name, (n, size, assocs, resend) in workloads.items():
                px = pixels(n, size, seed=n)
                total = n * assocs
                for run in range(args.runs):
                    order = ["sidecar", "orthanc"] if run % 2 == 0 else ["orthanc", "sidecar"]
                    for system in order:
                        folder = work / "data" / f"{name}-{run}-{system}"
                        for a in range(assocs):  # one study per association
                            write_series(folder / str(a) if assocs > 1 else folder, px,
                                         f"{run}{system[0]}{a}")
                        store = work / "store" / f"{name}-{run}-{system}"
                        # Each run starts from a quiet disk: the previous run's writeback
                        # (of either system) must not bleed into this measurement.
                        os.sync()
                        if system == "sidecar":
                            sidecar.start(store)
                            if resend:
                                storescu(sidecar.port, "SIDECAR", folder)
                            elapsed = storescu(sidecar.port, "SIDECAR", folder,
                                               associations=assocs)
                            sidecar.stop()
                        else:
                            orthanc.start(store)
                            if resend:
                                storescu(orthanc.port, "ORTHANC", folder, orthanc.prefix)
                            elapsed = storescu(orthanc.port, "ORTHANC", folder, orthanc.prefix,
                                               associations=assocs)
                            orthanc.stop()
                        results[name][system].append(total / elapsed)
                        print(f"{name} run {run + 1} {system:8s} {total / elapsed:7.1f} inst/s "
                              f"({elapsed:.2f} s)", flush=True)
                        shutil.rmtree(folder)
                        shutil.rmtree(store, ignore_errors=True)
            print()
            for name, by in results.items():
                s, o = (float(np.median(by[k])) for k in ("sidecar", "orthanc"))
                print(f"{name:14s} sidecar {s:7.1f}/s  orthanc {o:7.1f}/s  "
                      f"ratio sidecar/orthanc {s / o:.2f} (median of {args.runs})")
            if args.rss_instances:
                folder = work / "data" / "rss"
                write_series(folder, pixels(args.rss_instances, 512, seed=7), "rss")
                sidecar.start(work / "store" / "rss")
                before = sidecar.peak_rss_mb()[0]
                elapsed = storescu(sidecar.port, "SIDECAR", folder)
                rss, hwm = sidecar.peak_rss_mb()
                print(f"\n{args.rss_instances}-instance study (512x512 CT): "
                      f"{args.rss_instances / elapsed:.1f} inst/s; ingest process RSS "
                      f"{before:.0f} MB before, peak (VmHWM) {hwm:.0f} MB, {rss:.0f} MB after")
        finally:
            sidecar.close()
            orthanc.close()
            if args.work is None:
                shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
