"""The database an admin command works on: --database-url, or the data dir's embedded PostgreSQL."""

from __future__ import annotations

import argparse

from sidecar_app.errors import UserError

URL_PREFIXES = ("postgresql://", "postgres://", "postgresql+psycopg://")


def database_url(args: argparse.Namespace, must_exist: bool = False) -> str:
    """--database-url when given, else the data dir's embedded PostgreSQL (started if needed);
    with `must_exist`, a data dir that was never set up is an error rather than created."""
    if args.database_url:
        url = str(args.database_url)
        if not url.startswith(URL_PREFIXES):
            raise UserError(f"--database-url must start with postgresql:// (got {url[:40]!r})")
        return url
    from sidecar_app.runtime.embedded import EmbeddedPostgres

    if must_exist and not (args.data_dir / "pg").is_dir():
        raise UserError(f"no sidecar data dir at {args.data_dir} (no pg/ in it); pass the "
                        "--data-dir that 'sidecar up' runs on, or --database-url")
    try:
        args.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the data dir {args.data_dir}: "
                        f"{(exc.strerror or str(exc)).lower()}") from None
    pgdata = args.data_dir.resolve() / "pg"
    try:
        return EmbeddedPostgres(pgdata).url
    except Exception as exc:  # initdb or pg_ctl failed: pgserver raises with their output
        first = " ".join(str(exc).split())[:200]
        raise UserError(f"cannot start the embedded PostgreSQL in {pgdata}: {first}") from None
