"""The `sidecar` command: up, demo, synth, facility, user, adapter, tls, ingest, jobs,
objects verify, normalizer check, migrate, audit verify, retention run, purge."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from sidecar_app.admin_db import database_url
from sidecar_app.errors import (
    OneLineParser,
    UserError,
    database_error,
    guarded,
    quiet_library_warnings,
)
from sidecar_app.runtime.supervisor import DEFAULT_PORTS, UpOptions, run_up

if TYPE_CHECKING:
    from workflow_svc.operations.facility_settings import Setting

DEFAULT_DATA_DIR = Path(".data")


def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port (1-65535)")
    return int(text)


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds (0 or more)")
    return value


def _port_flags(p: argparse.ArgumentParser) -> None:
    for name, port in DEFAULT_PORTS.items():
        p.add_argument(
            f"--{name}-port", type=_port, default=port, dest=f"port_{name}",
            help=f"default {port}"
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


def _operator_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--operator",
                   help="who makes the change, for the audit (default: your login name)")


def _login_name() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name for this uid (e.g. a bare container)
        return f"uid-{os.getuid()}"


def _report_flags(p: argparse.ArgumentParser) -> None:
    """Report-loop settings (docs/readme/report-loop.md); an empty value clears one."""
    p.add_argument("--hl7-sending-facility", help="MSH-4 value of this facility's RIS")
    p.add_argument("--handoff-url", help="status webhook URL ('' = no handoff)")
    p.add_argument("--handoff-secret-stdin", action="store_true",
                   help="read the webhook's HMAC-SHA256 secret from stdin")
    p.add_argument("--llm-url", help="OpenAI-compatible base URL ('' = template drafter)")
    p.add_argument("--llm-model", help="model name sent to the LLM server")
    p.add_argument("--llm-timeout", type=float, help="seconds per LLM call")
    p.add_argument("--pacs", help="export destination AET@HOST:PORT ('' = no export)")
    p.add_argument("--pacs-dicomweb", metavar="URL",
                   help="the PACS's DICOMweb base URL, asked for priors by QIDO-RS / WADO-RS "
                   "instead of C-FIND / C-MOVE ('' = none)")
    p.add_argument("--pacs-dicomweb-auth-stdin", action="store_true",
                   help="read its Authorization header value from stdin: 'Bearer TOKEN' or "
                   "'Basic BASE64' (an empty line clears it; after the handoff secret's line "
                   "when both are read)")
    p.add_argument("--export-rejected", choices=["omit", "include"],
                   help="rejected findings in the exported SR: left out, or kept as rejected")


def _dicom_flags(p: argparse.ArgumentParser) -> None:
    """DICOM TLS and the rules for the facility's DICOM senders (docs/deployment.md, DICOM TLS)."""
    p.add_argument("--dicom-require-client-cert", choices=["on", "off"],
                   help="refuse this facility's AE title without a client certificate verified "
                   "on the DICOM TLS port (SIDECAR_DICOM_TLS_CLIENT_CA)")
    p.add_argument("--dicom-allowed-hosts", metavar="CIDR,...",
                   help="peer addresses allowed to send as this facility, on both DICOM ports "
                   "('' = any)")
    p.add_argument("--pacs-tls", choices=["on", "off"],
                   help="export to the PACS over DICOM TLS (trusting SIDECAR_PACS_TLS_CA)")


def _retention_flags(p: argparse.ArgumentParser) -> None:
    """Retention (docs/operations.md, Retention and purge); 0 clears a setting."""
    p.add_argument("--retention-days", type=_days,
                   help="days after a study's final state until its received DICOM and derived "
                   "objects are deleted (0 = kept forever)")
    p.add_argument("--report-retention-days", type=_days,
                   help="days until its report text and drafts are deleted (0 = as "
                   "--retention-days)")


def _prior_report_flags(p: argparse.ArgumentParser) -> None:
    """The patient's prior reports in a draft or chat's context (docs/report-loop.md)."""
    p.add_argument("--prior-report-lookback-days", type=_days,
                   help="how far back before the study a prior report may be (0 = the "
                   "default, 3 years)")
    p.add_argument("--prior-report-max", type=_reports,
                   help="how many prior reports at most, newest first (0 = none; default 5)")


def _prior_report_settings(args: argparse.Namespace) -> dict[str, object]:
    given: dict[str, object] = {}
    if args.prior_report_lookback_days is not None:
        given["prior_report_lookback_days"] = args.prior_report_lookback_days or None
    if args.prior_report_max is not None:
        given["prior_report_max"] = args.prior_report_max
    return given


def _reports(text: str) -> int:
    if not text.isdigit() or int(text) > 20:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of reports (0 to 20)")
    return int(text)


def _days(text: str) -> int:
    if not text.isdigit() or int(text) > 36500:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of days (0 to 36500)")
    return int(text)


def _retention_settings(args: argparse.Namespace) -> dict[str, object]:
    return {k: (v or None) for k, v in (("retention_days", args.retention_days),
                                        ("report_retention_days", args.report_retention_days))
            if v is not None}


def _dicom_settings(args: argparse.Namespace) -> dict[str, object]:
    on = {"on": True, "off": False, None: None}
    return _given({"dicom_require_client_cert": on[args.dicom_require_client_cert],
                   "dicom_allowed_hosts": args.dicom_allowed_hosts,
                   "pacs_tls": on[args.pacs_tls]})


def _https_flags(p: argparse.ArgumentParser) -> None:
    """HTTPS of the review gateway and the OHIF viewer (docs/deployment.md, HTTPS and proxies)."""
    p.add_argument("--tls-cert", type=Path, default=_env_path("SIDECAR_HTTPS_CERT"),
                   help="HTTPS certificate (PEM, chain after the leaf) of the gateway and the "
                   "viewer; default SIDECAR_HTTPS_CERT; unset: plain HTTP")
    p.add_argument("--tls-key", type=Path, default=_env_path("SIDECAR_HTTPS_KEY"),
                   help="its key (PEM); default SIDECAR_HTTPS_KEY")
    p.add_argument("--insecure-http", action="store_true",
                   default=os.environ.get("SIDECAR_INSECURE_HTTP", "").lower()
                   in ("1", "true", "yes", "on"),
                   help="allow plain HTTP on a non-loopback SIDECAR_GATEWAY_HOST or "
                   "SIDECAR_VIEWER_HOST (behind a TLS-terminating proxy)")


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name, "")
    return Path(value) if value else None


def _up_options(args: argparse.Namespace) -> UpOptions:
    return UpOptions(args.data_dir, _ports(args), replicas=max(args.replicas, 1),
                     https_cert=args.tls_cert, https_key=args.tls_key,
                     insecure_http=args.insecure_http)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="sidecar", description=__doc__)
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
        _https_flags(p)

    p = sub.add_parser("synth", help="write synthetic studies with a ground-truth JSON")
    p.add_argument("out", type=Path)
    p.add_argument("--kind", choices=["chest-ct", "mammo", "brain-mr"], required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--count", type=_positive, default=1, help="number of studies")

    fac = sub.add_parser("facility", help="manage facilities").add_subparsers(
        dest="action", required=True
    )
    p = fac.add_parser("add")
    p.add_argument("name")
    p.add_argument("--ae-title")
    p.add_argument("--shadow-mode", action="store_true")
    _operator_flag(p)
    _db_flags(p)

    p = fac.add_parser("set", help="change onboarding settings of a facility")
    p.add_argument("name")
    p.add_argument("--ae-title")
    p.add_argument("--shadow-mode", choices=["on", "off"])
    p.add_argument("--quiet-period", type=_seconds, help="study completion quiet period, seconds")
    p.add_argument("--models", help="comma-separated enabled models, or 'all'")
    _report_flags(p)
    _dicom_flags(p)
    _retention_flags(p)
    _prior_report_flags(p)
    p.add_argument("--completion", choices=["quiet", "association", "explicit"],
                   help="when a study is complete: after the quiet period (default), also when "
                        "its DIMSE association is released, or only on CompleteStudy")
    p.add_argument("--settle", type=float,
                   help="seconds without a new instance after an association release")
    _operator_flag(p)
    _db_flags(p)
    p = fac.add_parser("list")
    _db_flags(p)
    p = fac.add_parser("check", help="walk a synthetic test study through every stage of a "
                       "running `sidecar up` for this facility")
    from sidecar_app.facility_check import add_arguments

    add_arguments(p)
    _db_flags(p)

    usr = sub.add_parser("user", help="manage users").add_subparsers(dest="action", required=True)
    p = usr.add_parser("add")
    p.add_argument("name")
    p.add_argument("--role", choices=["radiologist", "admin", "auditor"], required=True)
    p.add_argument("--facility")
    p.add_argument("--password-stdin", action="store_true", required=True)
    _operator_flag(p)
    _db_flags(p)
    from sidecar_app.accounts_cli import add_parsers as account_parsers

    account_parsers(usr, _operator_flag, _db_flags)

    hof = sub.add_parser("handoff", help="status handoff tools").add_subparsers(
        dest="action", required=True)
    p = hof.add_parser("retry", help="queue a study's failed handoffs again (after sync_failed)")
    p.add_argument("--study", required=True, help="study id (as in the audit event)")
    _db_flags(p)

    p = sub.add_parser("migrate", help="bring the database schema to the latest migration")
    _db_flags(p)
    p.set_defaults(database_url=os.environ.get("SIDECAR_MIGRATION_DATABASE_URL")
                   or os.environ.get("SIDECAR_DATABASE_URL", ""))

    objs = sub.add_parser("objects", help="object store tools").add_subparsers(
        dest="action", required=True)
    p = objs.add_parser("verify", help="check every indexed instance's bytes against its key")
    p.add_argument("--study", default="", help="only this StudyInstanceUID")
    p.add_argument("--objects-dir", type=Path, help="default: DATA_DIR/objects")
    p.add_argument("--object-store-url", default=os.environ.get("SIDECAR_OBJECT_STORE_URL", ""),
                   help="s3://BUCKET[/PREFIX]?endpoint=URL for an S3-compatible store "
                   "(default SIDECAR_OBJECT_STORE_URL; empty: the local store)")
    _db_flags(p)

    from sidecar_app.credentials_cli import add_parsers as credential_parsers
    from sidecar_app.secrets_cli import add_parsers as secrets_parsers

    secrets_parsers(sub, _db_flags)

    credential_parsers(sub, _db_flags)

    from sidecar_app.audit_cli import add_parsers as audit_parsers

    audit_parsers(sub, _db_flags)

    from sidecar_app.retention_cli import add_parsers as retention_parsers

    retention_parsers(sub, _db_flags, _operator_flag)

    sub.add_parser("ingest", help="send DICOM files (see `sidecar ingest --help`)", add_help=False)
    sub.add_parser("jobs", help="failed jobs: list, re-drive, discard (`sidecar jobs --help`)",
                   add_help=False)
    sub.add_parser(
        "normalizer", help="normalizer tools: `sidecar normalizer check HOST:PORT`", add_help=False
    )
    return parser


async def _admin(args: argparse.Namespace) -> int:
    url = database_url(args)
    try:
        return await _admin_on(url, args)
    except Exception as exc:
        raise (database_error(exc, url) or exc) from None


async def _admin_on(url: str, args: argparse.Namespace) -> int:
    from sidecar_core.db import Database, sqlalchemy_url
    from sidecar_core.store.migrate import upgrade

    await asyncio.to_thread(upgrade, sqlalchemy_url(url))
    if args.command == "migrate":
        print("database schema is up to date")
        return 0
    db = Database(url, pool_size=1)
    try:
        if args.command == "handoff":
            return await _handoff_retry(db, args)
        if args.command == "secrets":
            from sidecar_app.secrets_cli import run as run_secrets

            return await run_secrets(db, args)
        if args.command == "facility" and args.action == "check":
            return await _facility_check(db, args)
        if args.command == "facility":
            return await _facility_admin(db, args)
        if args.command == "adapter":
            from sidecar_app.credentials_cli import run_adapter

            return await run_adapter(db, args, getattr(args, "operator", None) or _login_name())
        from sidecar_app.accounts_cli import run as run_accounts

        return await run_accounts(db, args, getattr(args, "operator", None) or _login_name())
    finally:
        await db.close()


async def _destinations(db: object, name: str) -> tuple[tuple[str, str, int] | None, str]:
    """The facility's PACS export destination and handoff URL, where configured."""
    from sqlalchemy import select

    from sidecar_core.store.models import Facility

    async with db.read() as s:  # type: ignore[attr-defined]
        row = (await s.execute(select(Facility).where(Facility.name == name))).scalar_one()
    pacs = None
    if row.pacs_ae_title and row.pacs_host and row.pacs_port:
        pacs = (row.pacs_ae_title, row.pacs_host, int(row.pacs_port))
    return pacs, row.handoff_url or ""


def _settings_table() -> dict[str, Setting]:
    from sidecar_core.settings import CommonSettings
    from workflow_svc.operations import facility_settings

    return facility_settings.settings_table(CommonSettings().registry().names())


async def _facility_check(db: object, args: argparse.Namespace) -> int:
    from sidecar_app import facility_check as fc
    from workflow_svc.operations import facility_settings

    found = [f for f in await facility_settings.list_facilities(
        db, _settings_table())  # type: ignore[arg-type]
             if f["name"] == args.name]
    if not found:
        from sidecar_app.errors import UserError

        raise UserError(f"no facility named {args.name!r}; add it with "
                        f"'sidecar facility add {args.name}'")
    f = found[0]
    models = f["enabled_models"]
    facility = fc.Facility(f["name"], f["ae_title"] or "", f["shadow_mode"],
                           list(models) if models != "all" else None)
    facility.pacs, facility.handoff_url = await _destinations(db, args.name)
    facility.pacs_tls = bool(f.get("pacs_tls"))
    from sidecar_app.credentials_cli import client_credentials

    targets = fc.targets_of(args.data_dir, args.ingest, args.workflow, args.dicom,
                            client_credentials(args))
    from sidecar_core.settings import CommonSettings

    kinds = fc.kinds_for(facility, CommonSettings().registry().names(), args.kind)

    egress = CommonSettings(data_dir=args.data_dir).egress_policy()
    return await asyncio.to_thread(fc.run, facility, targets, kinds, args.timeout,
                                   fc.Report(), egress)


def _models_text(value: object) -> str:
    return ",".join(value) if isinstance(value, list) else "all"


async def _facility_admin(db: object, args: argparse.Namespace) -> int:
    """`facility add|set|list` through the one facility-settings writer (validated, audited
    as facility.created / facility.updated with the operator and `via: cli`)."""
    from sidecar_core.settings import CommonSettings
    from workflow_svc.operations import facility_settings

    table = _settings_table()
    if args.action == "list":
        for f in await facility_settings.list_facilities(db, table):  # type: ignore[arg-type]
            print(f"{f['name']}\tae={f['ae_title'] or '-'}\t"
                  f"shadow={'on' if f['shadow_mode'] else 'off'}"
                  f"\tquiet={f['quiet_period_s']:g}s\tmodels={_models_text(f['enabled_models'])}")
        return 0
    create = args.action == "add"
    given = _onboarding_settings(args) if create else {
        **_onboarding_settings(args), **_completion_settings(args), **_report_settings(args),
        **_dicom_settings(args), **_retention_settings(args), **_prior_report_settings(args)}
    settings = CommonSettings(data_dir=args.data_dir)
    try:
        egress = settings.egress_policy()
        box = (settings.secret_box() if any(table[k].secret and v for k, v in given.items()
                                             if k in table) else None)
    except Exception as exc:  # a bad SIDECAR_EGRESS_ALLOW item or SIDECAR_SECRET_KEY
        from sidecar_app.errors import UserError

        raise UserError(f"error: {exc}") from None
    view = await facility_settings.save(
        db, settings.topology(), table, args.name, given,  # type: ignore[arg-type]
        args.operator or _login_name(), create, via="cli", egress=egress, box=box)
    if create:
        print(f"facility {view['name']} added")
        return 0
    if _onboarding_settings(args) or not given:
        print(f"facility {view['name']}: ae={view['ae_title'] or '-'} shadow="
              f"{'on' if view['shadow_mode'] else 'off'} quiet={view['quiet_period_s']:g}s "
              f"models={_models_text(view['enabled_models'])}")
    if _completion_settings(args):
        print(f"facility {view['name']}: completion={view['completion_mode']} "
              f"settle={view['association_settle_s']:g}s")
    if _report_settings(args):
        pacs = (f"{view['pacs_ae_title']}@{view['pacs_host']}:{view['pacs_port']}"
                if view["pacs_host"] else None)
        shown = {"hl7_sending_facility": view["hl7_sending_facility"],
                 "handoff_url": view["handoff_url"], "handoff_signed": view["handoff_secret"],
                 "llm_base_url": view["llm_base_url"], "llm_model": view["llm_model"],
                 "llm_timeout_s": view["llm_timeout_s"], "pacs": pacs,
                 "export_rejected": view["export_rejected"],
                 "pacs_dicomweb": view.get("pacs_dicomweb_url"),
                 "pacs_dicomweb_auth": view.get("pacs_dicomweb_auth")}
        print(f"facility {view['name']}: " + " ".join(f"{k}={v}" for k, v in shown.items()))
    if _dicom_settings(args):
        print(f"facility {view['name']}: dicom_require_client_cert="
              f"{'on' if view['dicom_require_client_cert'] else 'off'} dicom_allowed_hosts="
              f"{view['dicom_allowed_hosts'] or 'any'} pacs_tls="
              f"{'on' if view['pacs_tls'] else 'off'}")
    if _retention_settings(args):
        print(f"facility {view['name']}: retention_days={view['retention_days'] or 'forever'} "
              f"report_retention_days={view['report_retention_days'] or 'as retention_days'}")
    if _prior_report_settings(args):
        lookback, most = view["prior_report_lookback_days"], view["prior_report_max"]
        print(f"facility {view['name']}: prior_report_lookback_days="
              f"{lookback or 'default (1095)'} prior_report_max="
              f"{'default (5)' if most is None else most}")
    return 0


async def _handoff_retry(db: object, args: argparse.Namespace) -> int:
    import uuid

    from sidecar_core.settings import CommonSettings
    from workflow_svc.report_loop.handoff import redrive

    jobs = await redrive(db, CommonSettings().topology(), uuid.UUID(args.study))  # type: ignore[arg-type]
    print(f"{len(jobs)} handoff job(s) queued again" + "".join(f"\n  {j}" for j in jobs))
    return 0 if jobs else 1


def _given(pairs: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in pairs.items() if v is not None}


def _onboarding_settings(args: argparse.Namespace) -> dict[str, object]:
    """The onboarding flags of `facility add|set` that were given, as settings."""
    shadow = args.shadow_mode
    if isinstance(shadow, str):  # set: on|off; add: a plain switch
        shadow = shadow == "on"
    elif not shadow:
        shadow = None
    models: object = None
    if args.action == "set" and args.models is not None:
        models = "all" if args.models == "all" else [m for m in args.models.split(",") if m]
    return _given({"ae_title": args.ae_title, "shadow_mode": shadow,
                   "quiet_period_s": getattr(args, "quiet_period", None),
                   "enabled_models": models})


def _completion_settings(args: argparse.Namespace) -> dict[str, object]:
    return _given({"completion_mode": args.completion, "association_settle_s": args.settle})


def _report_settings(args: argparse.Namespace) -> dict[str, object]:
    """The report-loop flags of `facility set` that were given ('' clears one), as settings."""
    given: dict[str, object] = _given({
        "hl7_sending_facility": args.hl7_sending_facility, "handoff_url": args.handoff_url,
        "llm_base_url": args.llm_url, "llm_model": args.llm_model,
        "llm_timeout_s": args.llm_timeout, "export_rejected": args.export_rejected,
    })
    if args.handoff_secret_stdin:
        given["handoff_secret"] = sys.stdin.readline().rstrip("\n")
    if args.pacs_dicomweb is not None:
        given["pacs_dicomweb_url"] = args.pacs_dicomweb
    if args.pacs_dicomweb_auth_stdin:
        given["pacs_dicomweb_auth"] = sys.stdin.readline().rstrip("\r\n")
    if args.pacs is not None:
        aet, _, hostport = args.pacs.partition("@")
        host, _, port = hostport.rpartition(":")
        if args.pacs and not (aet and host and port.isdigit()):
            print("error: --pacs wants AET@HOST:PORT", file=sys.stderr)
            raise SystemExit(2)
        given.update(pacs_ae_title=aet, pacs_host=host,
                     pacs_port=int(port) if port.isdigit() else None)
    return given


def run_verify(args: argparse.Namespace) -> int:
    from ingest_svc.verify import verify_objects
    from sidecar_core.storage.s3store import open_object_store

    store = open_object_store(args.object_store_url,
                              args.objects_dir or args.data_dir / "objects", fsync=False)
    url = database_url(args)
    try:
        report = verify_objects(url, store, args.study)
    except Exception as exc:
        raise (database_error(exc, url) or exc) from None
    for line in report.lines():
        print(line)
    return 0 if report.ok else 1


def run_synth(out: Path, kind: str, seed: int, count: int) -> int:
    """Writes `count` studies (seeds seed, seed+1, ...); one folder each when count > 1."""
    from sidecar_synth import generate

    for i in range(count):
        folder = out if count == 1 else out / f"{kind}-{seed + i:04d}"
        truth = generate(kind, folder, seed + i)
        print(
            f"{folder}: {kind} study {truth.study_instance_uid} accession "
            f"{truth.accession_number}, {len(truth.files)} files, {len(truth.lesions)} lesions"
        )
    return 0


def _normalizer(argv: list[str]) -> int:
    from normalizer_svc.check_cli import build_parser as check_parser
    from normalizer_svc.check_cli import run as check_run
    from sidecar_app.errors import ensure_reachable

    if not argv or argv[0] in ("-h", "--help"):
        print("usage: sidecar normalizer check HOST:PORT --model NAME")
        return 0 if argv else 2
    if argv[0] != "check":
        raise UserError(f"unknown normalizer command {argv[0]!r}; the one there is: "
                        "sidecar normalizer check HOST:PORT --model NAME")
    args = check_parser(OneLineParser).parse_args(argv[1:])
    ensure_reachable("the normaliser", args.target, 50053,
                     hint="is the NormalizerService running there?")
    return check_run(args)


def _run(argv: list[str]) -> int:
    if argv and argv[0] == "ingest":
        from sidecar_app.ingest_cli import main as ingest_main

        return ingest_main(argv[1:])
    if argv and argv[0] == "jobs":
        from sidecar_app.jobs_cli import main as jobs_main

        return jobs_main(argv[1:])
    if argv and argv[0] == "normalizer":
        return _normalizer(argv[1:])
    args = build_parser().parse_args(argv)
    if args.command == "up":
        return run_up(_up_options(args))
    if args.command == "demo":
        from sidecar_app.runtime.demo import load_demo

        return run_up(_up_options(args),
                      after_ready=[load_demo])
    if args.command == "synth":
        return run_synth(args.out, args.kind, args.seed, args.count)
    if args.command == "objects":
        return run_verify(args)
    if args.command in ("retention", "purge"):
        from sidecar_app.retention_cli import run as run_retention

        return run_retention(args, _login_name)
    if args.command == "audit":
        from sidecar_app.audit_cli import run_audit

        return run_audit(args)
    if args.command == "tls":
        from sidecar_app.credentials_cli import run_tls_init

        return run_tls_init(args)
    return asyncio.run(_admin(args))


def main(argv: Sequence[str] | None = None) -> int:
    """The console script: every failure ends as one line on stderr and a non-zero status."""
    quiet_library_warnings()
    args = list(sys.argv[1:] if argv is None else argv)
    words = args[:2] if args[:1] in (["facility"], ["user"], ["objects"], ["normalizer"],
                                     ["adapter"], ["tls"], ["audit"], ["secrets"],
                                     ["retention"]) \
        else args[:1]
    prog = " ".join(["sidecar", *(w for w in words if not w.startswith("-"))])
    return guarded(prog, lambda: _run(args))


if __name__ == "__main__":
    sys.exit(main())
