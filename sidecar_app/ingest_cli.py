"""`sidecar ingest`: send DICOM files or folders to the sidecar over DIMSE, STOW-RS or gRPC."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from review_gateway.dicomweb import stow
from sidecar_app.credentials_cli import add_credentials_flag, client_credentials
from sidecar_app.errors import OneLineParser, UserError, ensure_reachable, rpc_error, unreachable

BATCH_BYTES = 32 * 1024 * 1024
BATCH_FILES = 64
USAGE = "sidecar ingest PATH... --facility NAME [--target HOST:PORT] [--via grpc|dimse|stow]"
INGEST = "the ingest service"
CliError = UserError  # a failure that ends the run (login refused, no AE title, HTTP error)


@dataclass
class Tally:
    """What happened to the files; printed as the summary line."""

    files: int = 0
    bytes: int = 0
    stored: int = 0
    duplicate: int = 0
    rejected: int = 0
    studies: set[str] = field(default_factory=set)
    started: float = field(default_factory=time.monotonic)

    def line(self) -> str:
        secs = max(time.monotonic() - self.started, 1e-6)
        mb = self.bytes / 1e6
        return (f"{self.files} files, {mb:.1f} MB in {secs:.1f} s ({self.files / secs:.1f} "
                f"files/s, {mb / secs:.1f} MB/s): {self.stored} stored, {self.duplicate} "
                f"duplicate, {self.rejected} rejected")


class Progress:
    """A one-line bar on a terminal (files, MB, rate); silent otherwise."""

    def __init__(self, total: int, out: TextIO) -> None:
        self.total, self.out, self.live = total, out, out.isatty()

    def update(self, tally: Tally) -> None:
        if self.live:
            done = int(30 * tally.files / max(self.total, 1))
            secs = max(time.monotonic() - tally.started, 1e-6)
            self.out.write(f"\r[{'#' * done}{'.' * (30 - done)}] {tally.files}/{self.total} "
                           f"files {tally.bytes / 1e6:7.1f} MB {tally.files / secs:6.1f} "
                           f"files/s {tally.bytes / 1e6 / secs:6.1f} MB/s")
            self.out.flush()

    def close(self) -> None:
        if self.live:
            self.out.write("\n")


def is_part10(path: Path) -> bool:
    """A DICOM Part 10 file: 128-byte preamble then 'DICM'."""
    try:
        with path.open("rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def discover(paths: list[Path]) -> tuple[list[Path], list[Path]]:
    """(files to send, files skipped). Files named on the command line are always sent; in
    folders, like storescu's directory scan, only DICOM Part 10 files are (DICOMDIR excluded).
    A path that does not exist, or a folder without one DICOM Part 10 file, is a UserError."""
    found: list[Path] = []
    skipped: list[Path] = []
    for path in paths:
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file())
            dicom = [p for p in files if p.name.upper() != "DICOMDIR" and is_part10(p)]
            if not dicom:
                raise UserError(f"{path} holds no DICOM Part 10 file ({len(files)} other "
                                f"file{'' if len(files) == 1 else 's'}); nothing sent")
            found.extend(dicom)
            skipped.extend(p for p in files if p not in set(dicom))
        elif path.is_file():
            found.append(path)
        else:
            raise UserError(f"no such file or folder: {path}")
    return found, skipped


def batches(files: list[Path]) -> Iterator[list[tuple[Path, bytes]]]:
    batch: list[tuple[Path, bytes]] = []
    size = 0
    for path in files:
        data = path.read_bytes()
        if batch and (size + len(data) > BATCH_BYTES or len(batch) >= BATCH_FILES):
            yield batch
            batch, size = [], 0
        batch.append((path, data))
        size += len(data)
    if batch:
        yield batch


def _reject(tally: Tally, path: Path | str, why: str) -> None:
    tally.rejected += 1
    print(f"rejected {path}: {why}", file=sys.stderr)


def send_grpc(args: argparse.Namespace, files: list[Path], tally: Tally, bar: Progress) -> None:
    import grpc

    from protos.sidecar.ingest.v1 import ingest_service_pb2 as pb
    from protos.sidecar.ingest.v1 import ingest_service_pb2_grpc as pb_grpc

    outcome = {pb.INSTANCE_OUTCOME_STORED: "stored", pb.INSTANCE_OUTCOME_DUPLICATE: "duplicate"}
    address = args.target or args.ingest_address
    ensure_reachable(INGEST, address, 50051)
    with client_credentials(args).channel(address, options=[
            ("grpc.max_send_message_length", 256 * 1024 * 1024)]) as channel:
        stub = pb_grpc.IngestServiceStub(channel)
        for batch in batches(files):
            try:
                reply = stub.IngestInstances(pb.IngestInstancesRequest(
                    facility=args.facility, items=[pb.IngestInstancesRequestItem(
                        dicom=data, source_ref=str(path)) for path, data in batch]), timeout=600)
            except grpc.RpcError as exc:
                raise rpc_error(INGEST, address, exc) from None
            for (path, data), r in zip(batch, reply.results, strict=True):
                tally.files, tally.bytes = tally.files + 1, tally.bytes + len(data)
                kind = outcome.get(r.outcome)
                if kind is None:
                    _reject(tally, path, f"{r.reason}: {r.message}")
                else:
                    setattr(tally, kind, getattr(tally, kind) + 1)
                    tally.studies.add(r.study_instance_uid)
            bar.update(tally)


def send_dimse(args: argparse.Namespace, files: list[Path], tally: Tally, bar: Progress) -> None:
    from sidecar_app.errors import host_port
    from sidecar_core.dicom.store_scu import (
        AssociationRefused,
        ContextRejected,
        StoreSCU,
        chunks,
        prepare,
        status_of,
    )

    host, port = host_port(args.target or "127.0.0.1:11112", 11112)
    calling = args.calling_ae or facility_ae_title(args)
    for batch in batches(files):
        entries = [(path, data, prepare(data)) for path, data in batch]
        for group in chunks(entries, key=lambda e: e[2].context):
            contexts = [e[2].context for e in group]
            scu = StoreSCU(host, port, calling, args.called_ae, contexts)
            try:
                scu.__enter__()  # associates; released by __exit__ below
            except AssociationRefused as exc:
                if exc.rejected is None:  # no association at all: is anything listening?
                    ensure_reachable("the DICOM port", f"{host}:{port}", port)
                raise UserError(f"the DICOM port at {host}:{port} refused calling AE "
                                f"{calling!r}, called AE {args.called_ae!r}: {exc}") from None
            try:
                for path, data, item in group:
                    tally.files, tally.bytes = tally.files + 1, tally.bytes + len(data)
                    try:
                        rsp = scu.store(item)
                    except ContextRejected as exc:
                        _reject(tally, path, f"presentation context refused ({exc})")
                        continue
                    status = status_of(rsp)
                    if status is not None and (status == 0 or status >> 12 == 0xB):
                        tally.stored += 1
                        tally.studies.add(stow.identify(data).study_instance_uid)
                    else:
                        comment = rsp.get("ErrorComment", "") if status is not None else ""
                        _reject(tally, path, "no response" if status is None else
                                f"status 0x{status:04X} {comment}".strip())
                    bar.update(tally)
            finally:
                scu.__exit__(None, None, None)


def send_stow(args: argparse.Namespace, files: list[Path], tally: Tally, bar: Progress) -> None:
    import httpx

    url = f"http://{args.target}/dicomweb" if args.target else args.url.rstrip("/")
    password = os.environ.get("SIDECAR_PASSWORD", "")
    if not args.username or not password:
        raise CliError("STOW-RS needs --username and the password in SIDECAR_PASSWORD")
    with httpx.Client(timeout=600) as http:
        try:
            login = http.post(url.rsplit("/dicomweb", 1)[0] + "/api/v1/auth/login",
                              json={"username": args.username, "password": password})
        except httpx.TransportError as exc:
            why = "connection refused" if "refused" in str(exc).lower() else str(exc) or \
                type(exc).__name__
            raise unreachable("the review gateway", url, why) from None
        if login.status_code != 200:
            raise CliError(f"login as {args.username!r} failed: HTTP {login.status_code} "
                           f"{' '.join(login.text[:200].split())}")
        auth = {"Authorization": f"Bearer {login.json()['access_token']}"}
        for batch in batches(files):
            boundary = f"sidecar-{time.monotonic_ns()}"
            body = b"".join(b"\r\n--" + boundary.encode() + b"\r\nContent-Type: "
                            b"application/dicom\r\n\r\n" + data for _, data in batch)
            reply = http.post(f"{url}/studies", params={"facility": args.facility},
                              content=body + b"\r\n--" + boundary.encode() + b"--", headers={
                                  **auth, "Content-Type": 'multipart/related; type="application/'
                                  f'dicom"; boundary={boundary}',
                                  "Accept": "application/dicom+json"})
            if reply.status_code not in (200, 202, 409):
                raise CliError(f"STOW-RS failed: HTTP {reply.status_code} "
                               f"{' '.join(reply.text[:300].split())}")
            _stow_outcomes(reply.json(), batch, tally)
            bar.update(tally)


def _stow_outcomes(body: dict[str, Any], batch: list[tuple[Path, bytes]], tally: Tally) -> None:
    by_uid = {stow.identify(data).sop_instance_uid: (path, data) for path, data in batch}
    tally.files += len(batch)
    tally.bytes += sum(len(d) for _, d in batch)
    for item in body.get("00081199", {}).get("Value", []):
        uid = item.get("00081155", {}).get("Value", [""])[0]
        tally.stored += 1
        tally.studies.add(stow.identify(by_uid.get(uid, (None, b""))[1]).study_instance_uid)
    for item in body.get("00081198", {}).get("Value", []):
        uid = item.get("00081155", {}).get("Value", [""])[0]
        reason = item.get("00081197", {}).get("Value", [0])[0]
        _reject(tally, by_uid.get(uid, (f"part with SOP instance {uid or '?'}",))[0],
                f"FailureReason 0x{reason:04X}")


def facility_ae_title(args: argparse.Namespace) -> str:
    """The calling AE of --facility, read from the workflow store (or pass --calling-ae)."""
    import asyncio

    from sidecar_app.admin_db import database_url
    from sidecar_core.db import Database
    from sidecar_core.store.models import Facility

    async def lookup() -> str | None:
        from sqlalchemy import select

        db = Database(database_url(args, must_exist=True), pool_size=1)
        try:
            async with db.read() as session:
                return await session.scalar(select(Facility.ae_title).where(
                    Facility.name == args.facility))
        finally:
            await db.close()

    ae = asyncio.run(lookup())
    if not ae:
        raise CliError(f"facility {args.facility!r} has no AE title; pass --calling-ae")
    return ae


def complete(args: argparse.Namespace, studies: set[str]) -> None:
    import grpc

    from protos.sidecar.ingest.v1 import ingest_service_pb2 as pb
    from protos.sidecar.ingest.v1 import ingest_service_pb2_grpc as pb_grpc

    address = args.target if args.via == "grpc" and args.target else args.ingest_address
    ensure_reachable(INGEST, address, 50051)
    with client_credentials(args).channel(address) as channel:
        stub = pb_grpc.IngestServiceStub(channel)
        for uid in sorted(u for u in studies if u):
            try:
                done = stub.CompleteStudy(pb.CompleteStudyRequest(
                    facility=args.facility, study_instance_uid=uid), timeout=60)
            except grpc.RpcError as exc:
                raise rpc_error(INGEST, address, exc) from None
            print(f"study {uid}: {'completed' if done.completed_count else 'already complete'}")


def parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="sidecar ingest", usage=USAGE, description=__doc__)
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    p.add_argument("--facility", required=True, help="registered facility the files belong to")
    p.add_argument("--via", choices=["grpc", "dimse", "stow"], default="grpc",
                   help="transport (default grpc: the Ingest RPC)")
    p.add_argument("--target", default="", help="HOST:PORT of the Ingest RPC (grpc, default "
                   "127.0.0.1:50051), of the DICOM port (dimse, default 127.0.0.1:11112) or of "
                   "the gateway (stow, default: --url)")
    p.add_argument("--complete", action="store_true", help="mark the studies complete after")
    p.add_argument("--calling-ae", default="", help="dimse: default the facility's AE title")
    p.add_argument("--called-ae", default="SIDECAR")
    p.add_argument("--url", default="http://127.0.0.1:8080/dicomweb", help="stow: DICOMweb root")
    p.add_argument("--username", default="", help="stow: password from SIDECAR_PASSWORD")
    p.add_argument("--ingest-address", default=os.environ.get("SIDECAR_INGEST_ADDRESS",
                                                              "127.0.0.1:50051"))
    p.add_argument("--data-dir", type=Path, default=Path(".data"))
    add_credentials_flag(p)
    p.add_argument("--database-url", default=os.environ.get("SIDECAR_DATABASE_URL", ""))
    return p


def main(argv: list[str]) -> int:
    """0 when everything was stored (or was a duplicate), 1 when anything was rejected."""
    args = parser().parse_args(argv)
    files, skipped = discover(args.paths)
    tally, bar = Tally(), Progress(len(files), sys.stderr)
    send = {"dimse": send_dimse, "stow": send_stow, "grpc": send_grpc}[args.via]
    try:
        send(args, files, tally, bar)
    except BaseException:  # unreachable, association rejected, RPC failure: the caller says
        bar.close()
        if tally.files:
            print(f"ingest ({args.via}, incomplete): {tally.line()}")
        raise
    bar.close()
    note = f" ({len(skipped)} non-DICOM files in folders skipped)" if skipped else ""
    print(f"ingest ({args.via}): {tally.line()}{note}")
    if args.complete and tally.stored + tally.duplicate:
        complete(args, tally.studies)
    return 1 if tally.rejected else 0
