"""What the `sidecar` command tells a person when something fails: one line, never a traceback."""

from __future__ import annotations

import argparse
import errno
import os
import socket
import sys
import warnings
from collections.abc import Callable
from typing import NoReturn
from urllib.parse import urlsplit

UP_HINT = "is 'sidecar up' running?"
DEBUG_ENV = "SIDECAR_DEBUG"


class UserError(Exception):
    """A failure the person can act on; `str()` is the whole message (one line)."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line (and where the help is), exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def quiet_library_warnings() -> None:
    """platformdirs warns on every run without XDG_RUNTIME_DIR (pgserver asks it for a lock
    directory at import; it falls back to a private /tmp/runtime-UID): not the user's business."""
    try:
        from platformdirs.api import RuntimeDirWarning
    except ImportError:  # an older platformdirs has no such warning
        return
    warnings.filterwarnings("ignore", category=RuntimeDirWarning)


def host_port(address: str, default_port: int) -> tuple[str, int]:
    """'HOST:PORT' (or 'HOST', or ':PORT') as a pair; a bad port is a UserError."""
    host, sep, port = address.rpartition(":")
    if not sep:
        return address or "127.0.0.1", default_port
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError(f"{address!r} is not HOST:PORT")
    return host.strip("[]") or "127.0.0.1", int(port)


def _why(exc: OSError) -> str:
    if isinstance(exc, socket.timeout | TimeoutError):
        return "timed out"
    if isinstance(exc, socket.gaierror):
        return "unknown host"
    if exc.errno is not None and exc.errno in errno.errorcode:
        return os.strerror(exc.errno).lower()
    return str(exc) or type(exc).__name__


def unreachable(what: str, address: str, why: str, hint: str = UP_HINT) -> UserError:
    return UserError(f"cannot reach {what} at {address} ({why}); {hint}")


def ensure_reachable(what: str, address: str, default_port: int, hint: str = UP_HINT,
                     timeout_s: float = 5.0) -> None:
    """Opens and closes a TCP connection to `address`; a refusal becomes the one-line error."""
    host, port = host_port(address, default_port)
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except OSError as exc:
        raise unreachable(what, f"{host}:{port}", _why(exc), hint) from None


def rpc_error(what: str, address: str, exc: BaseException) -> UserError:
    """A gRPC failure as one line: unreachable, timed out, or the service's own refusal."""
    import grpc

    if not isinstance(exc, grpc.RpcError) or not isinstance(exc, grpc.Call):
        return UserError(f"{what} at {address} failed: {exc}")
    code, details = exc.code(), (exc.details() or "").strip()
    lowered = details.lower()
    if code == grpc.StatusCode.UNAVAILABLE and details and not any(
            s in lowered for s in ("failed to connect", "connection refused", "connect failed",
                                   "connection reset", "socket closed", "dns resolution")):
        # The service answered: it could not take the request now (e.g. its object store or
        # database refused the write) and says what to do.
        return UserError(f"{what} at {address} rejected the request for now: "
                         f"{details.splitlines()[0]}")
    if code == grpc.StatusCode.UNAVAILABLE:
        why = "connection refused" if "refused" in lowered else (details or "unavailable")
        return unreachable(what, address, why.splitlines()[0])
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return UserError(f"{what} at {address} did not answer in time")
    return UserError(f"{what} at {address} refused the request: {code.name}: "
                     f"{details.splitlines()[0] if details else '(no details)'}")


def database_error(exc: BaseException, url: str = "") -> UserError | None:
    """A psycopg / SQLAlchemy connection failure as one line naming where the database is;
    None for any other exception."""
    text = str(getattr(exc, "orig", None) or exc)
    if "connection failed" not in text and "could not connect" not in text \
            and "Connection refused" not in text:
        return None
    where = ""
    if url:
        parts = urlsplit(url)
        where = f" at {parts.hostname or 'localhost'}:{parts.port or 5432}"
    lowered = text.lower()
    why = ("connection refused" if "refused" in lowered else
           "authentication failed" if "authentication" in lowered else
           text.splitlines()[0].removeprefix("connection failed: ")[:160])
    return UserError(f"cannot reach the database{where} ({why}); check --database-url or "
                     "--data-dir")


def one_line(exc: BaseException) -> tuple[str, int]:
    """The message and exit status for an exception that ended a command."""
    if isinstance(exc, UserError):
        return str(exc), exc.exit_code
    try:
        from sidecar_core.errors import DomainError
    except ImportError:  # pragma: no cover - the kernel is always installed with the app
        DomainError = ()  # type: ignore[assignment,misc]  # noqa: N806
    if isinstance(exc, DomainError):
        return f"{exc.reason}: {' '.join(exc.message.split())}", 2
    database = database_error(exc)
    if database is not None:
        return str(database), 2
    if isinstance(exc, OSError):
        why = exc.strerror.lower() if exc.strerror else _why(exc)
        return f"{why}{f': {exc.filename}' if exc.filename else ''}", 2
    text = " ".join(str(exc).split()) or "(no message)"
    return (f"unexpected {type(exc).__name__}: {text[:300]} (run with {DEBUG_ENV}=1 for the "
            "traceback)", 1)


def guarded(prog: str, run: Callable[[], int]) -> int:
    """Runs a command; an exception becomes `PROG: error: ...` on stderr and a non-zero exit."""
    try:
        return run()
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except SystemExit:
        raise
    except BaseException as exc:  # noqa: BLE001 - the one place that turns failures into lines
        if os.environ.get(DEBUG_ENV):
            raise
        message, code = one_line(exc)
        print(f"{prog}: error: {message}", file=sys.stderr, flush=True)
        return code
