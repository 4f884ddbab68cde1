"""The `sidecar` command with bad arguments, bad input or nothing running: one line a person can
act on, a non-zero exit, never a traceback; and no library warning noise on stderr."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.acceptance.stack import clean_env, run_cli, stack_root
from tests.servers import free_port

BAD_ARGUMENTS = [
    ([], "sidecar: error: the following arguments are required: command"),
    (["frob"], "invalid choice: 'frob'"),
    (["up", "--gateway-port", "http"], "--gateway-port: 'http' is not a TCP port"),
    (["demo", "--ingest-port", "70000"], "--ingest-port: '70000' is not a TCP port"),
    (["synth", "{tmp}"], "required: --kind"),
    (["synth", "{tmp}", "--kind", "chest-ct", "--count", "0"], "--count: '0'"),
    (["synth", "/proc/no/such/dir", "--kind", "mammo"], "no such file or directory"),
    (["facility"], "sidecar facility: error"),
    (["facility", "add"], "required: name"),
    (["facility", "set", "x", "--shadow-mode", "maybe"], "--shadow-mode: invalid choice"),
    (["facility", "list", "--database-url", "nope"], "--database-url must start with"),
    (["user", "add", "x", "--role", "boss", "--password-stdin"], "--role: invalid choice"),
    (["user", "add", "x", "--role", "admin"], "required: --password-stdin"),
    (["ingest"], "required: PATH, --facility"),
    (["ingest", "/no/such/file.dcm", "--facility", "a"], "no such file or folder"),
    (["ingest", "{tmp}", "--facility", "a", "--via", "fax"], "--via: invalid choice"),
    (["ingest", "{dcm}", "--facility", "a", "--target", "host:port"],
     "'host:port' is not HOST:PORT"),
    (["normalizer"], "usage: sidecar normalizer check"),
    (["normalizer", "frob"], "unknown normalizer command 'frob'"),
    (["normalizer", "check"], "required: HOST:PORT, --model"),
    (["normalizer", "check", "127.0.0.1:1"], "required: --model"),
    (["objects"], "sidecar objects: error"),
    (["objects", "verify", "--database-url", "sqlite:///x"], "--database-url must start with"),
    (["migrate", "--bogus"], "unrecognized arguments: --bogus"),
]


@pytest.fixture()
def paths(tmp_path: Path) -> dict[str, str]:
    dcm = tmp_path / "one.dcm"
    dcm.write_bytes(b"\0" * 128 + b"DICM")
    return {"tmp": str(tmp_path), "dcm": str(dcm)}


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = [ln for ln in (done.stderr + done.stdout).splitlines() if ln.strip()]
    assert done.returncode != 0, done.stdout
    assert "Traceback" not in done.stderr, done.stderr
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize(("argv", "expected"), BAD_ARGUMENTS,
                         ids=[" ".join(a) or "(none)" for a, _ in BAD_ARGUMENTS])
def test_bad_arguments_get_one_line(argv: list[str], expected: str,
                                    paths: dict[str, str]) -> None:
    done = run_cli(*(a.format(**paths) for a in argv), timeout=60)
    assert expected in one_error_line(done)


@pytest.mark.parametrize("via", ["grpc", "dimse", "stow"])
def test_ingest_with_nothing_running_says_so(via: str, paths: dict[str, str]) -> None:
    port = free_port()
    what = {"grpc": "the ingest service at 127.0.0.1:{p}", "dimse": "the DICOM port at "
            "127.0.0.1:{p}", "stow": "the review gateway at http://127.0.0.1:{p}/dicomweb"}[via]
    extra = {"dimse": ["--calling-ae", "ACC"], "stow": ["--username", "a"]}.get(via, [])
    done = run_cli("ingest", paths["dcm"], "--facility", "a", "--via", via, "--target",
                   f"127.0.0.1:{port}", *extra, env=clean_env(SIDECAR_PASSWORD="x"))
    assert one_error_line(done) == (f"sidecar ingest: error: cannot reach {what.format(p=port)} "
                                    "(connection refused); is 'sidecar up' running?")
    assert done.returncode == 2


def test_ingest_complete_with_nothing_running_says_so(paths: dict[str, str]) -> None:
    port = free_port()
    done = run_cli("ingest", paths["dcm"], "--facility", "a", "--target", f"127.0.0.1:{port}",
                   "--complete")
    assert f"cannot reach the ingest service at 127.0.0.1:{port} (connection refused)" in \
        one_error_line(done)


def test_normalizer_check_with_nothing_running_says_so() -> None:
    port = free_port()
    done = run_cli("normalizer", "check", f"127.0.0.1:{port}", "--model", "chest_ct_nodules")
    assert one_error_line(done) == (
        f"sidecar normalizer check: error: cannot reach the normaliser at 127.0.0.1:{port} "
        "(connection refused); is the NormalizerService running there?")


def test_ingest_of_a_folder_without_dicom_exits_non_zero(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not an image")
    done = run_cli("ingest", str(tmp_path), "--facility", "a", "--target",
                   f"127.0.0.1:{free_port()}")
    assert one_error_line(done) == (f"sidecar ingest: error: {tmp_path} holds no DICOM Part 10 "
                                    "file (1 other file); nothing sent")


def test_ingest_via_dimse_without_a_data_dir_says_what_to_pass(tmp_path: Path,
                                                                paths: dict[str, str]) -> None:
    done = run_cli("ingest", paths["dcm"], "--facility", "a", "--via", "dimse", "--data-dir",
                   str(tmp_path / "nowhere"))
    assert "no sidecar data dir at" in one_error_line(done)
    assert not (tmp_path / "nowhere").exists()


def test_no_runtime_dir_warning_on_stderr() -> None:
    env = {k: v for k, v in clean_env().items() if k != "XDG_RUNTIME_DIR"}
    # the condition that made every command warn: importing pgserver without XDG_RUNTIME_DIR
    bare = subprocess.run([sys.executable, "-c", "import pgserver"], capture_output=True,
                          text=True, env=env, timeout=60)
    assert "XDG_RUNTIME_DIR" in bare.stderr, "precondition: pgserver's import warns"
    with stack_root() as root:  # starts (and stops) an embedded PostgreSQL there
        done = run_cli("facility", "list", "--data-dir", str(root / "data"), env=env)
    assert done.returncode == 0, done.stderr
    assert "XDG_RUNTIME_DIR" not in done.stderr and "Warning" not in done.stderr, done.stderr
