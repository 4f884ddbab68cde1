"""`sidecar secrets rotate`: a new key for the secret settings, every sealed value re-sealed."""

from __future__ import annotations

import argparse

from sidecar_core.db import Database
from sidecar_core.secret_box import PREVIOUS_DIR, rotate_key_file
from sidecar_core.settings import CommonSettings
from workflow_svc.operations.facility_settings import seal_plaintext
from workflow_svc.report_loop.legacy_reports import reseal_texts


def add_parsers(sub: argparse._SubParsersAction, db_flags) -> None:  # type: ignore[type-arg,no-untyped-def]
    sec = sub.add_parser("secrets", help="the key of secret settings").add_subparsers(
        dest="action", required=True)
    p = sec.add_parser("rotate", help="a new key in DATA_DIR/keys/secrets.key, every secret "
                       "setting re-sealed with it (with SIDECAR_SECRET_KEY: re-seal with that "
                       "key what an earlier key sealed)")
    db_flags(p)


async def run(db: Database, args: argparse.Namespace) -> int:
    settings = CommonSettings(data_dir=args.data_dir)
    if settings.secret_key:
        box = settings.secret_box()
        count = await seal_plaintext(db, box)
        texts = await reseal_texts(db, box)
        print(f"{texts} report text(s) and {count} secret setting(s) re-sealed with the "
              "key of SIDECAR_SECRET_KEY "
              f"({box.key_id}); once every process runs with it, drop "
              "SIDECAR_SECRET_PREVIOUS_KEYS")
        return 0
    old, new = rotate_key_file(args.data_dir)
    box = settings.secret_box()
    count = await seal_plaintext(db, box)
    texts = await reseal_texts(db, box)
    print(f"secret key {old} -> {new}: {count} secret setting(s) and {texts} report text(s) "
          "re-sealed; the old key is "
          f"kept in {args.data_dir / PREVIOUS_DIR / (old + '.key')} (running services take up "
          "the new key by themselves; delete the old one when no database backup needs it)")
    return 0
