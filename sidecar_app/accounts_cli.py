"""`sidecar user add | list | disable | enable | reset-password | revoke-sessions`: the account
lifecycle on the command line, each change audited with `--operator` and the door `cli`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from sidecar_app.errors import UserError

Flags = Callable[[argparse.ArgumentParser], None]


def add_parsers(usr: Any, operator_flag: Flags, db_flags: Flags) -> None:
    """The lifecycle subcommands of `sidecar user` (`add` is declared beside them in cli.py)."""
    p = usr.add_parser("list", help="every user: role, facility, enabled or disabled")
    db_flags(p)
    for action, text in (
            ("disable", "refuse the user's logins and, within the revocation cache time, "
                        "every request of their sessions (event streams included)"),
            ("enable", "let a disabled user log in again"),
            ("revoke-sessions", "end every session of the user (they can log in again)"),
            ("reset-password", "set a new password (one line on standard input); ends every "
                               "session of the user")):
        p = usr.add_parser(action, help=text)
        p.add_argument("name")
        if action == "reset-password":
            p.add_argument("--password-stdin", action="store_true", required=True)
        operator_flag(p)
        db_flags(p)


def _password() -> str:
    password = sys.stdin.readline().rstrip("\n")
    if not password:
        raise UserError("no password on standard input (--password-stdin reads one line)")
    return password


async def run(db: Any, args: argparse.Namespace, operator: str) -> int:
    from sidecar_core.settings import CommonSettings
    from workflow_svc.identity import accounts

    topology = CommonSettings().topology()
    if args.action == "add":
        uid = await accounts.add(db, topology, args.name, _password(), args.role, args.facility,
                                 operator, via="cli")
        print(f"user {args.name} added (id {uid}, role {args.role})")
    elif args.action == "list":
        print(f"{'USER':24} {'ROLE':12} {'FACILITY':20} STATUS")
        for a in await accounts.list_accounts(db):
            print(f"{a.username:24} {a.role:12} {a.facility or '-':20} {a.status}")
    elif args.action in ("disable", "enable"):
        changed = await accounts.set_disabled(db, topology, args.name, args.action == "disable",
                                              operator, via="cli")
        print(f"user {args.name} {args.action}d" if changed
              else f"user {args.name} was already {args.action}d")
    elif args.action == "revoke-sessions":
        await accounts.revoke_sessions(db, topology, args.name, operator, via="cli")
        print(f"every session of user {args.name} revoked")
    elif args.action == "reset-password":
        await accounts.reset_password(db, topology, args.name, _password(), operator, via="cli")
        print(f"password of user {args.name} reset; every session revoked")
    return 0
