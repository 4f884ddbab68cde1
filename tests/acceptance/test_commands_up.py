"""Every command of the README's command table against a running `sidecar up`: one working and
one failing case each; a failure is one line on stderr and a non-zero exit, never a traceback."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.acceptance.stack import Stack, clean_env, run_cli


def failed_in_one_line(done: subprocess.CompletedProcess[str], *expected: str) -> str:
    """The stderr of a failed command: non-zero, one line, no traceback, naming `expected`."""
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert done.returncode != 0, done.stderr
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    for text in expected:
        assert text in lines[0], lines[0]
    return str(lines[0])


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three synthetic brain MR studies (`sidecar synth --count 3`), one per transport."""
    out = tmp_path_factory.mktemp("synth")
    done = run_cli("synth", str(out), "--kind", "brain-mr", "--seed", "40", "--count", "3")
    assert done.returncode == 0, done.stderr
    folders = sorted(p for p in out.iterdir() if p.is_dir())
    assert [p.name for p in folders] == ["brain-mr-0040", "brain-mr-0041", "brain-mr-0042"]
    assert done.stdout.count("brain-mr study") == 3
    return folders


def uid_of(folder: Path) -> str:
    return str(json.loads((folder / "ground_truth.json").read_text())["study_instance_uid"])


def ingest_status(stack: Stack, folder: Path) -> list[tuple[str, int]]:
    return [(str(r[0]), int(r[1])) for r in stack.sql(
        "select ingest_status, instance_count from studies where study_instance_uid = %s",
        uid_of(folder))]


def test_up_prints_where_the_review_ui_is(stack: Stack) -> None:
    assert f"Sidecar is up. Review UI: {stack.base_url}/" in stack.output()
    assert "Traceback" not in stack.output() and "RuntimeDirWarning" not in stack.output()


def test_up_refuses_ports_already_in_use(stack: Stack, tmp_path: Path) -> None:
    flags = [f"--{name}-port={port}" for name, port in stack.ports.items()]
    done = run_cli("up", "--data-dir", str(tmp_path / "second"), *flags, timeout=60)
    failed_in_one_line(done, "already in use", f"gateway port {stack.ports['gateway']}")


def test_synth_rejects_an_unknown_kind(tmp_path: Path) -> None:
    failed_in_one_line(run_cli("synth", str(tmp_path), "--kind", "knee-xr"), "--kind")


def test_facility_add_and_a_duplicate(stack: Stack) -> None:
    done = stack.cli("facility", "add", "acc_east", "--ae-title", "ACC_EAST", "--shadow-mode")
    assert done.returncode == 0 and "facility acc_east added" in done.stdout, done.stderr
    failed_in_one_line(stack.cli("facility", "add", "acc_east"), "acc_east")


def test_facility_set_then_list(stack: Stack) -> None:
    added = stack.cli("facility", "add", "acc_west", "--ae-title", "ACC_WEST", "--shadow-mode")
    assert added.returncode == 0, added.stderr
    done = stack.cli("facility", "set", "acc_west", "--shadow-mode", "off", "--quiet-period",
                     "2.5", "--models", "brain_mr_lesions", "--ae-title", "WEST_PACS",
                     "--operator", "acc_operator")
    assert done.returncode == 0, done.stderr
    # the CLI's change is audited with its operator and what changed, as the admin API's is
    [(actor, context)] = stack.sql(
        "SELECT actor, context FROM audit_events WHERE type = 'facility.updated' "
        "AND facility = %s", "acc_west")
    assert actor == "operator:acc_operator"
    assert context["via"] == "cli" and context["operator"] == "acc_operator"
    assert context["settings"]["ae_title"] == "WEST_PACS", context
    listed = stack.cli("facility", "list")
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if line.startswith("acc_west\t"))
    assert row.split("\t")[1:] == ["ae=WEST_PACS", "shadow=off", "quiet=2.5s",
                                   "models=brain_mr_lesions"]
    assert any(line.startswith(f"{stack.north}\tae={stack.north_ae}")
               for line in listed.stdout.splitlines())


def test_facility_set_refuses_an_unknown_model_or_facility(stack: Stack) -> None:
    # a facility of this test's own: each test runs alone too (`pytest FILE::TEST`)
    added = stack.cli("facility", "add", "acc_refusing", "--ae-title", "ACC_REFUSING")
    assert added.returncode == 0, added.stderr
    failed_in_one_line(stack.cli("facility", "set", "acc_refusing", "--models", "no_such_model"),
                       "no_such_model")
    failed_in_one_line(stack.cli("facility", "set", "no_such_facility", "--shadow-mode", "on"),
                       "no_such_facility")
    failed_in_one_line(stack.cli("facility", "set", "acc_refusing", "--quiet-period", "soon"),
                       "--quiet-period")


def test_facility_list_with_an_unreachable_database() -> None:
    done = run_cli("facility", "list", "--database-url", "postgresql://acc@127.0.0.1:1/none")
    failed_in_one_line(done, "cannot reach the database at 127.0.0.1:1 (connection refused)")


def test_user_add_and_a_radiologist_without_facility(stack: Stack) -> None:
    done = stack.cli("user", "add", "acc_auditor", "--role", "auditor", "--password-stdin",
                     stdin="auditor password 1\n")
    assert done.returncode == 0 and "role auditor" in done.stdout, done.stderr
    assert stack.login("acc_auditor", "auditor password 1")
    failed_in_one_line(stack.cli("user", "add", "lonely", "--role", "radiologist",
                                 "--password-stdin", stdin="radiologist pw 1\n"),
                       "FACILITY_REQUIRED")
    failed_in_one_line(stack.cli("user", "add", "acc_auditor", "--role", "auditor",
                                 "--password-stdin", stdin="auditor password 2\n"),
                       "USER_EXISTS")


def test_ingest_via_grpc_with_complete(stack: Stack, studies: list[Path]) -> None:
    folder = studies[0]
    done = run_cli("ingest", str(folder), "--facility", stack.north, "--via", "grpc",
                   "--target", stack.address("ingest"), "--complete",
                   "--data-dir", str(stack.data_dir))  # its operator credential
    assert done.returncode == 0, done.stdout + done.stderr
    files = len(list(folder.glob("**/*.dcm")))
    assert f"{files} stored, 0 duplicate, 0 rejected" in done.stdout
    assert f"study {uid_of(folder)}: completed" in done.stdout
    assert ingest_status(stack, folder) == [("complete", files)]


def test_ingest_via_grpc_for_an_unknown_facility(stack: Stack, studies: list[Path]) -> None:
    done = run_cli("ingest", str(studies[0]), "--facility", "no_such_facility",
                   "--target", stack.address("ingest"), "--data-dir", str(stack.data_dir))
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
    assert "no_such_facility" in done.stderr


def test_ingest_via_dimse_with_complete(stack: Stack, studies: list[Path]) -> None:
    folder = studies[1]
    done = stack.cli("ingest", str(folder), "--facility", stack.north, "--via", "dimse",
                     "--target", stack.address("dicom"), "--ingest-address",
                     stack.address("ingest"), "--complete")
    assert done.returncode == 0, done.stdout + done.stderr
    files = len(list(folder.glob("**/*.dcm")))
    assert f"{files} stored" in done.stdout
    assert f"study {uid_of(folder)}: completed" in done.stdout
    assert ingest_status(stack, folder) == [("complete", files)]


def test_ingest_via_dimse_from_a_facility_without_ae_title(stack: Stack,
                                                           studies: list[Path]) -> None:
    assert stack.cli("facility", "add", "acc_noae").returncode == 0
    done = stack.cli("ingest", str(studies[1]), "--facility", "acc_noae", "--via", "dimse",
                     "--target", stack.address("dicom"))
    failed_in_one_line(done, "acc_noae", "no AE title", "--calling-ae")
    done = stack.cli("ingest", str(studies[1]), "--facility", stack.north, "--via", "dimse",
                     "--target", stack.address("dicom"), "--calling-ae", "STRANGER")
    failed_in_one_line(done, "refused calling AE 'STRANGER'", "not recognised")


def test_ingest_via_stow_with_complete(stack: Stack, studies: list[Path]) -> None:
    folder = studies[2]
    done = run_cli("ingest", "--data-dir", str(stack.data_dir),
                   str(folder), "--facility", stack.south, "--via", "stow",
                   "--target", stack.address("gateway"), "--username", stack.admin,
                   "--ingest-address", stack.address("ingest"), "--complete",
                   env=clean_env(SIDECAR_PASSWORD=stack.password))
    assert done.returncode == 0, done.stdout + done.stderr
    files = len(list(folder.glob("**/*.dcm")))
    assert f"{files} stored" in done.stdout
    assert f"study {uid_of(folder)}: completed" in done.stdout
    assert ingest_status(stack, folder) == [("complete", files)]


def test_ingest_via_stow_with_a_wrong_password(stack: Stack, studies: list[Path]) -> None:
    done = run_cli("ingest", "--data-dir", str(stack.data_dir),
                   str(studies[2]), "--facility", stack.south, "--via", "stow",
                   "--target", stack.address("gateway"), "--username", stack.admin,
                   env=clean_env(SIDECAR_PASSWORD="not the password"))
    failed_in_one_line(done, f"login as '{stack.admin}' failed: HTTP 401")


def test_ingest_of_a_folder_without_dicom(stack: Stack, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not an image")
    done = run_cli("ingest", "--data-dir", str(stack.data_dir),
                   str(tmp_path), "--facility", stack.north,
                   "--target", stack.address("ingest"))
    failed_in_one_line(done, str(tmp_path), "holds no DICOM Part 10 file")


def test_ingest_rejection_of_a_named_non_dicom_file_exits_1(stack: Stack, tmp_path: Path) -> None:
    note = tmp_path / "notes.txt"
    note.write_text("not an image")
    done = run_cli("ingest", "--data-dir", str(stack.data_dir),
                   str(note), "--facility", stack.north,
                   "--target", stack.address("ingest"))
    assert done.returncode == 1 and "0 stored, 0 duplicate, 1 rejected" in done.stdout
    assert f"rejected {note}" in done.stderr and "Traceback" not in done.stderr


def test_migrate_is_a_no_op_on_a_current_schema(stack: Stack) -> None:
    done = stack.cli("migrate")
    assert done.returncode == 0 and "database schema is up to date" in done.stdout, done.stderr
    heads = stack.sql("select version_num from alembic_version")
    assert len(heads) == 1


def test_migrate_with_a_database_url_that_is_not_postgresql() -> None:
    failed_in_one_line(run_cli("migrate", "--database-url", "mysql://db/x"),
                       "--database-url must start with postgresql://")
