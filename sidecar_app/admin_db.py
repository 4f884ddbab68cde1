"""The database an admin command works on: --database-url, or the data dir's embedded PostgreSQL."""

from __future__ import annotations

import argparse


def database_url(args: argparse.Namespace) -> str:
    if args.database_url:
        return str(args.database_url)
    from sidecar_app.runtime.embedded import EmbeddedPostgres

    args.data_dir.mkdir(parents=True, exist_ok=True)
    return EmbeddedPostgres(args.data_dir.resolve() / "pg").url
