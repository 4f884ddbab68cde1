"""The `sidecar` command: up, demo, synth, facility, user, ingest, objects verify,
normalizer check, migrate."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from sidecar_app.admin_db import database_url
from sidecar_app.runtime.supervisor import DEFAULT_PORTS, UpOptions, run_up

DEFAULT_DATA_DIR = Path(".data")


def _port_flags(p: argparse.ArgumentParser) -> None:
    for name, port in DEFAULT_PORTS.items():
        p.add_argument(
            f"--{name}-port", type=int, default=port, dest=f"port_{name}", help=f"default {port}"
        )


def _ports(args: argparse.Namespace) -> dict[str, int]:
    return {name: getattr(args, f"port_{name}") for name in DEFAULT_PORTS}


def _db_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        help="embedded data dir (its PostgreSQL is used unless --database-url)",
    )
    p.add_argument("--database-url", default=os.environ.get("SIDECAR_DATABASE_URL", ""))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sidecar", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    for name, help_ in (
        ("up", "run the whole mesh on embedded defaults"),
        ("demo", "like up, and load the bundled synthetic studies"),
    ):
        p = sub.add_parser(name, help=help_)
        p.add_argument(
            "--data-dir",
            type=Path,
            default=Path(".demo-data") if name == "demo" else DEFAULT_DATA_DIR,
        )
        _port_flags(p)
        p.add_argument("--replicas", type=int, default=int(os.environ.get("SIDECAR_REPLICAS", 1)),
                       help="processes of each stateless worker (workflow, preprocess, "
                       "normalizer); default 1 or SIDECAR_REPLICAS")

    p = sub.add_parser("synth", help="write synthetic studies with a ground-truth JSON")
    p.add_argument("out", type=Path)
    p.add_argument("--kind", choices=["chest-ct", "mammo", "brain-mr"], required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--count", type=int, default=1, help="number of studies")

    fac = sub.add_parser("facility", help="manage facilities").add_subparsers(
        dest="action", required=True
    )
    p = fac.add_parser("add")
    p.add_argument("name")
    p.add_argument("--ae-title")
    p.add_argument("--shadow-mode", action="store_true")
    _db_flags(p)

    p = fac.add_parser("set", help="change onboarding settings of a facility")
    p.add_argument("name")
    p.add_argument("--ae-title")
    p.add_argument("--shadow-mode", choices=["on", "off"])
    p.add_argument("--quiet-period", type=float, help="study completion quiet period, seconds")
    p.add_argument("--models", help="comma-separated enabled models, or 'all'")
    _db_flags(p)
    p = fac.add_parser("list")
    _db_flags(p)

    usr = sub.add_parser("user", help="manage users").add_subparsers(dest="action", required=True)
    p = usr.add_parser("add")
    p.add_argument("name")
    p.add_argument("--role", choices=["radiologist", "admin", "auditor"], required=True)
    p.add_argument("--facility")
    p.add_argument("--password-stdin", action="store_true", required=True)
    _db_flags(p)

    p = sub.add_parser("migrate", help="bring the database schema to the latest migration")
    _db_flags(p)

    objs = sub.add_parser("objects", help="object store tools").add_subparsers(
        dest="action", required=True)
    p = objs.add_parser("verify", help="check every indexed instance's bytes against its key")
    p.add_argument("--study", default="", help="only this StudyInstanceUID")
    p.add_argument("--objects-dir", type=Path, help="default: DATA_DIR/objects")
    p.add_argument("--object-store-url", default=os.environ.get("SIDECAR_OBJECT_STORE_URL", ""),
                   help="s3://BUCKET[/PREFIX]?endpoint=URL for an S3-compatible store "
                   "(default SIDECAR_OBJECT_STORE_URL; empty: the local store)")
    _db_flags(p)

    sub.add_parser("ingest", help="send DICOM files (see `sidecar ingest --help`)", add_help=False)
    sub.add_parser(
        "normalizer", help="normalizer tools: `sidecar normalizer check HOST:PORT`", add_help=False
    )
    return parser


async def _admin(args: argparse.Namespace) -> int:
    from sidecar_core.db import Database, sqlalchemy_url
    from sidecar_core.errors import DomainError
    from sidecar_core.store.migrate import upgrade
    from workflow_svc import users

    url = database_url(args)
    await asyncio.to_thread(upgrade, sqlalchemy_url(url))
    if args.command == "migrate":
        print("database schema is up to date")
        return 0
    db = Database(url, pool_size=1)
    try:
        if args.command == "facility" and args.action in ("set", "list"):
            return await _facility_admin(db, args)
        if args.command == "facility":
            fid = await users.add_facility(
                db, args.name, ae_title=args.ae_title, shadow_mode=args.shadow_mode
            )
            print(f"facility {args.name} added (id {fid})")
        else:
            password = sys.stdin.readline().rstrip("\n")
            uid = await users.add_user(db, args.name, password, args.role, args.facility)
            print(f"user {args.name} added (id {uid}, role {args.role})")
        return 0
    except DomainError as exc:
        print(f"error: {exc.reason}: {exc.message}", file=sys.stderr)
        return 2
    finally:
        await db.close()


async def _facility_admin(db: object, args: argparse.Namespace) -> int:
    from sidecar_core.registry import load_registry
    from workflow_svc import facilities

    if args.action == "list":
        for f in await facilities.list_facilities(db):  # type: ignore[arg-type]
            names = ",".join(f.enabled_models) if f.enabled_models is not None else "all"
            print(f"{f.name}\tae={f.ae_title or '-'}\tshadow={'on' if f.shadow_mode else 'off'}"
                  f"\tquiet={f.quiet_period_s:g}s\tmodels={names}")
        return 0
    models: list[str] | None = None
    if args.models not in (None, "all"):
        models = [m for m in args.models.split(",") if m]
    view = await facilities.update_facility(
        db, args.name, ae_title=args.ae_title,  # type: ignore[arg-type]
        shadow_mode=None if args.shadow_mode is None else args.shadow_mode == "on",
        quiet_period_s=args.quiet_period, enabled_models=models, all_models=args.models == "all",
        known_models=load_registry().names())
    print(f"facility {view.name}: ae={view.ae_title or '-'} shadow="
          f"{'on' if view.shadow_mode else 'off'} quiet={view.quiet_period_s:g}s models="
          f"{','.join(view.enabled_models) if view.enabled_models is not None else 'all'}")
    return 0


def run_verify(args: argparse.Namespace) -> int:
    from ingest_svc.verify import verify_objects
    from sidecar_core.s3store import open_object_store

    store = open_object_store(args.object_store_url,
                              args.objects_dir or args.data_dir / "objects", fsync=False)
    report = verify_objects(database_url(args), store, args.study)
    for line in report.lines():
        print(line)
    return 0 if report.ok else 1


def run_synth(out: Path, kind: str, seed: int, count: int) -> int:
    """Writes `count` studies (seeds seed, seed+1, ...); one folder each when count > 1."""
    from ingest_svc.synth import generate

    for i in range(count):
        folder = out if count == 1 else out / f"{kind}-{seed + i:04d}"
        truth = generate(kind, folder, seed + i)
        print(
            f"{folder}: {kind} study {truth.study_instance_uid} accession "
            f"{truth.accession_number}, {len(truth.files)} files, {len(truth.lesions)} lesions"
        )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "ingest":
        from sidecar_app.ingest_cli import main as ingest_main

        return ingest_main(argv[1:])
    if argv and argv[0] == "normalizer":
        from normalizer_svc.check_cli import main as check_main

        return check_main(argv[1:])
    args = build_parser().parse_args(argv)
    if args.command == "up":
        return run_up(UpOptions(args.data_dir, _ports(args), replicas=max(args.replicas, 1)))
    if args.command == "demo":
        from sidecar_app.runtime.demo import load_demo

        return run_up(UpOptions(args.data_dir, _ports(args), replicas=max(args.replicas, 1)),
                      after_ready=[load_demo])
    if args.command == "synth":
        return run_synth(args.out, args.kind, args.seed, args.count)
    if args.command == "objects":
        return run_verify(args)
    return asyncio.run(_admin(args))


if __name__ == "__main__":
    sys.exit(main())
