"""`sidecar retention run` and `sidecar purge`: the retention pass and deletion requests from
the command line (workflow_svc/operations/retention.py does the work)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sidecar_app.admin_db import database_url
from sidecar_app.errors import UserError, database_error


def _store_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--objects-dir", type=Path, help="default: DATA_DIR/objects")
    p.add_argument("--object-store-url", default=os.environ.get("SIDECAR_OBJECT_STORE_URL", ""),
                   help="s3://BUCKET[/PREFIX]?endpoint=URL (default SIDECAR_OBJECT_STORE_URL; "
                   "empty: the local store)")
    p.add_argument("--dry-run", action="store_true", help="say what would be deleted, delete "
                   "nothing")


def add_parsers(sub: Any, db_flags: Callable[[argparse.ArgumentParser], None],
                operator_flag: Callable[[argparse.ArgumentParser], None]) -> None:
    ret = sub.add_parser("retention", help="retention: delete what expired, compact pack "
                         "segments").add_subparsers(dest="action", required=True)
    p = ret.add_parser("run", help="one retention pass now (waits for a running one)")
    _store_flags(p)
    db_flags(p)
    p = sub.add_parser("purge", help="a deletion request: every row and object of a study or "
                       "of a patient's studies at a facility, audited")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--study", default="", help="StudyInstanceUID")
    target.add_argument("--patient", default="", help="PatientID")
    p.add_argument("--facility", required=True)
    p.add_argument("--reason", required=True, help="the deletion request (for the audit)")
    operator_flag(p)
    _store_flags(p)
    db_flags(p)


def run(args: argparse.Namespace, login_name: Callable[[], str]) -> int:
    from sidecar_core.errors import DomainError
    from workflow_svc.operations import retention
    from workflow_svc.settings import WorkflowSettings

    settings = WorkflowSettings(data_dir=args.data_dir)
    try:
        store = settings.model_copy(update={
            "object_store_url": args.object_store_url,
            "object_store_dir": args.objects_dir}).object_store()
    except ValueError as exc:
        raise UserError(f"error: {exc}") from None
    url = database_url(args, must_exist=not args.database_url)
    try:
        if args.command == "retention":
            report = retention.run_pass(url, store, settings.topology(), dry_run=args.dry_run,
                                        options=settings.retention_options())
        else:
            report = retention.purge(url, store, settings.topology(), facility=args.facility,
                                     reason=args.reason,
                                     operator=args.operator or login_name(),
                                     study_uid=args.study, patient_id=args.patient,
                                     dry_run=args.dry_run, options=settings.retention_options())
    except DomainError as exc:
        raise UserError(f"error: {exc}") from None
    except Exception as exc:
        raise (database_error(exc, url) or exc) from None
    assert report is not None  # run_pass waits for the lock
    for line in report.lines():
        print(line)
    return 0
