"""Mesh credentials on the command line: `sidecar tls init`, `sidecar adapter add|list|revoke`,
and the credential every command that calls a running service presents (`--credentials DIR`,
else the operator's in DATA_DIR/tls)."""

from __future__ import annotations

import argparse
from pathlib import Path

from sidecar_app.errors import UserError
from sidecar_core.security.mesh_tls import (
    TLS_DIR,
    MeshCredentials,
    MissingCredentials,
    from_folder,
)


def add_credentials_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--credentials", type=Path, default=None, metavar="DIR",
                   help="folder with ca.crt and one client certificate and key (from `sidecar "
                   "adapter add`); default: the operator's in DATA_DIR/tls")


def client_credentials(args: argparse.Namespace) -> MeshCredentials:
    """--credentials DIR, else DATA_DIR/tls/operator.{crt,key} (made by `sidecar up`)."""
    try:
        if getattr(args, "credentials", None):
            folder = Path(args.credentials)
            # a data dir's tls folder holds every service's: the operator's is the one to use
            return from_folder(folder, "operator" if (folder / "operator.crt").exists() else None)
        data_dir = Path(getattr(args, "data_dir", None) or ".data")
        folder = data_dir / TLS_DIR
        if not (folder / "operator.crt").exists():
            raise UserError(f"no operator credential in {folder} (it is made by 'sidecar up' "
                            "on that data dir); pass --data-dir or --credentials DIR")
        return from_folder(folder, "operator")
    except MissingCredentials as exc:
        raise UserError(str(exc)) from None


def add_parsers(sub: argparse._SubParsersAction, db_flags: object) -> None:  # type: ignore[type-arg]
    tls = sub.add_parser("tls", help="the mesh's certificates").add_subparsers(
        dest="action", required=True)
    p = tls.add_parser("init", help="create (or renew) the CA and every service's certificate "
                       "in DATA_DIR/tls, as `sidecar up` does on start")
    p.add_argument("--data-dir", type=Path, default=Path(".data"))
    p.add_argument("--host", action="append", default=[], dest="hosts",
                   help="another name or address the services' certificates are valid for")

    ada = sub.add_parser("adapter", help="PACS adapter credentials for the Ingest RPC"
                         ).add_subparsers(dest="action", required=True)
    p = ada.add_parser("add", help="issue a client certificate bound to one facility")
    p.add_argument("name")
    p.add_argument("--facility", required=True)
    p.add_argument("--out", type=Path, required=True, help="folder to write adapter.key, "
                   "adapter.crt and ca.crt into (created, mode 0700)")
    p.add_argument("--days", type=int, default=365, help="validity (default 365)")
    p.add_argument("--operator", help="who issues it, for the audit (default: login name)")
    db_flags(p)  # type: ignore[operator]
    p = ada.add_parser("list", help="every adapter credential and its state")
    db_flags(p)  # type: ignore[operator]
    p = ada.add_parser("revoke", help="revoke an adapter's credential (refused within 5 s)")
    p.add_argument("name")
    p.add_argument("--operator", help="who revokes it, for the audit (default: login name)")
    db_flags(p)  # type: ignore[operator]


def run_tls_init(args: argparse.Namespace) -> int:
    from sidecar_core.security.pki import ensure_mesh
    from sidecar_core.security.session_tokens import (
        PUBLIC_KEY_FILE,
        SIGNING_KEY_FILE,
        ensure_signing_key,
    )

    folder = args.data_dir / TLS_DIR
    written = ensure_mesh(folder, extra_hosts=args.hosts)
    print(f"mesh certificates in {folder}: "
          f"{'written ' + ', '.join(written) if written else 'all current'}")
    kid = ensure_signing_key(args.data_dir)
    print(f"session token key pair in {args.data_dir}: {SIGNING_KEY_FILE} (gateway only), "
          f"{PUBLIC_KEY_FILE} (workflow, ingest), key id {kid}")
    return 0


async def run_adapter(db: object, args: argparse.Namespace, operator: str) -> int:
    from sidecar_core.security import credentials
    from sidecar_core.settings import CommonSettings

    topology = CommonSettings().topology()
    if args.action == "add":
        view = await credentials.issue_adapter(
            db, topology, args.data_dir / TLS_DIR, args.name,  # type: ignore[arg-type]
            args.facility, args.out, operator, args.days)
        print(f"adapter {view.name} of facility {view.facility}: certificate {view.serial} "
              f"valid until {view.expires_at:%Y-%m-%d}, written to {args.out} "
              "(adapter.key, adapter.crt, ca.crt)")
        return 0
    if args.action == "list":
        for v in await credentials.list_credentials(db):  # type: ignore[arg-type]
            print(f"{v.name}\tfacility={v.facility or '-'}\t{v.state}\tserial={v.serial}\t"
                  f"expires={v.expires_at:%Y-%m-%d}\tissued_by={v.issued_by or '-'}")
        return 0
    serials = await credentials.revoke(db, topology, args.name, operator)  # type: ignore[arg-type]
    print(f"revoked {args.name}: {', '.join(serials)}")
    return 0
