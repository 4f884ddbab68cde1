"""Bus credentials: seeds, connect options, the embedded server's and deploy/'s config."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from sidecar_app.runtime.embedded import nats_binary
from sidecar_core.messaging import nats_auth
from sidecar_core.messaging.nats_auth import NatsAuth
from sidecar_core.messaging.subjects import Topology
from tests import pki as test_pki

REPO = Path(__file__).resolve().parents[4]


def test_seeds_are_private_and_kept(tmp_path: Path) -> None:
    first = nats_auth.ensure_users(tmp_path)
    assert set(first) == {"workflow", "ingest", "preprocess", "normalizer", "gateway",
                          "operator"}
    assert all(k.startswith("U") for k in first.values())
    assert len(set(first.values())) == len(first)
    seed = nats_auth.seed_path(tmp_path, "ingest")
    assert seed.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "nats-auth").stat().st_mode & 0o777 == 0o700
    assert nats_auth.ensure_users(tmp_path) == first


def test_connect_options_use_the_seed_the_inbox_and_no_tls_without_a_ca(tmp_path: Path) -> None:
    nats_auth.ensure_users(tmp_path)
    options = NatsAuth.of(tmp_path, "ingest").connect_options()
    assert options["inbox_prefix"] == "_INBOX.ingest"
    assert options["nkeys_seed_str"].startswith("SU")
    assert "tls" not in options
    assert NatsAuth.of(tmp_path / "elsewhere", "ingest").connect_options() == {
        "inbox_prefix": "_INBOX.ingest"}


def test_a_creds_file_wins_and_a_jwt_one_is_passed_as_such(tmp_path: Path) -> None:
    nats_auth.ensure_users(tmp_path)
    jwt = tmp_path / "user.creds"
    jwt.write_text("-----BEGIN NATS USER JWT-----\nxyz\n------END NATS USER JWT------\n")
    options = NatsAuth.of(tmp_path, "ingest", creds=jwt).connect_options()
    assert options["user_credentials"] == str(jwt) and "nkeys_seed_str" not in options


def _check(config: Path, env: dict[str, str]) -> None:
    done = subprocess.run([nats_binary(), "-c", str(config), "-t"], capture_output=True,
                          text=True, env={**os.environ, **env})
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_embedded_config_is_valid(tmp_path: Path) -> None:
    config = nats_auth.write_server_config(tmp_path, Topology(), port=4222,
                                           store=tmp_path / "js", tls_dir=test_pki.folder())
    assert config.stat().st_mode & 0o777 == 0o600
    text = config.read_text()
    assert "verify: true" in text and "no_auth_user" not in text
    _check(config, {})


def test_the_deploy_files_are_current_and_valid(tmp_path: Path) -> None:
    for relative, text in nats_auth.deploy_files().items():
        assert (REPO / relative).read_text() == text, (
            f"{relative} is stale: run `make nats-permissions`")
    keys = nats_auth.write_keys(tmp_path / "keys")
    env = {nats_auth.nkey_variable(u)[1:]: k for u, k in keys.items()}
    _check(REPO / nats_auth.DEPLOY_USERS_CONF, env)
    (tmp_path / "nats.conf").write_text("port: 4222\ninclude ./sidecar-users.conf\n")
    (tmp_path / "sidecar-users.conf").write_text(nats_auth.deploy_users_conf())
    _check(tmp_path / "nats.conf", env)
