"""`sidecar jobs`: the jobs that exhausted their retries (dead letters), re-driven or discarded.

    sidecar jobs failed [--facility NAME] [--kind KIND]
    sidecar jobs redrive (SEQ... | --facility NAME | --kind KIND) [--operator NAME]
    sidecar jobs discard (SEQ... | --facility NAME | --kind KIND) --reason TEXT [--operator NAME]

They talk to the workflow service of a running `sidecar up` (`--target`, default
127.0.0.1:50052) with the operator credential of its data dir (`--data-dir`, default .data) or
`--credentials DIR`. Every re-drive and discard is audited with the operator.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path

import grpc

from protos.sidecar.workflow.v1 import operations_service_pb2 as pb
from protos.sidecar.workflow.v1 import operations_service_pb2_grpc as pb_grpc
from sidecar_app.credentials_cli import add_credentials_flag, client_credentials
from sidecar_app.errors import OneLineParser, UserError, ensure_reachable, rpc_error

DEFAULT_TARGET = os.environ.get("SIDECAR_WORKFLOW_ADDRESS", "127.0.0.1:50052")


def parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="sidecar jobs", description=__doc__,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="action", required=True, parser_class=OneLineParser)
    for name, help_ in (("failed", "list the jobs that exhausted their retries"),
                        ("redrive", "put failed jobs back to work"),
                        ("discard", "drop failed jobs for good")):
        a = sub.add_parser(name, help=help_)
        if name != "failed":
            a.add_argument("sequences", nargs="*", type=int, metavar="SEQ",
                           help="dead-letter sequence numbers (from `sidecar jobs failed`)")
            a.add_argument("--operator", default=_default_operator(),
                           help="who does it (audited); default: the login name")
        if name == "discard":
            a.add_argument("--reason", required=True, help="why (audited)")
        a.add_argument("--facility", default="")
        a.add_argument("--kind", default="", help="preprocess, ai_run, overlay, ...")
        a.add_argument("--target", default=DEFAULT_TARGET,
                       help=f"workflow service HOST:PORT (default {DEFAULT_TARGET})")
        a.add_argument("--data-dir", type=Path, default=Path(".data"),
                       help="the data dir of `sidecar up` (its operator credential)")
        add_credentials_flag(a)
    return p


def _default_operator() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name in this environment
        return ""


def _line(d: pb.DeadLetter) -> str:
    at = d.at.ToDatetime().strftime("%Y-%m-%d %H:%M:%S") if d.HasField("at") else "-"
    return (f"{d.sequence}\t{at}\t{d.kind}\t{d.facility or '-'}\t{d.accession or '-'}\t"
            f"{d.deliveries} deliveries\t{d.error_class}: {d.error_message[:160]}")


def run(args: argparse.Namespace, ops: pb_grpc.OperationsServiceStub) -> int:
    where = pb.DeadLetterFilter(facility=args.facility, kind=args.kind,
                                sequences=getattr(args, "sequences", []))
    if args.action == "failed":
        token, count = "", 0
        while True:
            reply = ops.ListDeadLetters(pb.ListDeadLettersRequest(
                filter=where, page_size=200, page_token=token), timeout=60)
            for d in reply.dead_letters:
                print(_line(d))
                count += 1
            token = reply.next_page_token
            if not token:
                break
        print(f"{count} failed job{'s' if count != 1 else ''}", file=sys.stderr)
        return 0
    if args.action == "redrive":
        done = ops.RedriveDeadLetters(pb.RedriveDeadLettersRequest(
            filter=where, operator=args.operator), timeout=120)
        print(f"re-driven: {' '.join(map(str, done.redriven)) or 'none'}")
        return 0 if done.redriven else 1
    done = ops.DiscardDeadLetters(pb.DiscardDeadLettersRequest(
        filter=where, operator=args.operator, reason=args.reason), timeout=120)
    print(f"discarded: {' '.join(map(str, done.discarded)) or 'none'}")
    return 0 if done.discarded else 1


def main(argv: list[str]) -> int:
    """Failures become one line (`sidecar jobs: error: ...`) through the CLI's guard."""
    args = parser().parse_args(argv)
    try:
        ensure_reachable("the workflow service", args.target, 50052)
        with client_credentials(args).channel(args.target) as channel:
            return run(args, pb_grpc.OperationsServiceStub(channel))
    except grpc.RpcError as exc:
        code = exc.code() if isinstance(exc, grpc.Call) else None
        if code == grpc.StatusCode.INVALID_ARGUMENT and isinstance(exc, grpc.Call):
            raise UserError((exc.details() or "invalid request").splitlines()[0]) from None
        raise rpc_error("the workflow service", args.target, exc) from None
