"""Secrets at rest (sidecar_core.secret_box): AES-GCM sealing bound to its row and column, the
key file made once with mode 0600, plaintext from before sealing still opening, rotation."""

from __future__ import annotations

import base64
import os
import stat
import threading
from pathlib import Path

import pytest

from sidecar_core.secret_box import (
    KEY_FILE,
    PREVIOUS_DIR,
    SecretBox,
    SecretKeyError,
    facility_context,
    load_or_create_key,
    rotate_key_file,
)

CTX = facility_context("north", "handoff_secret")


def test_sealed_value_opens_only_in_its_own_row_and_column() -> None:
    box = SecretBox(os.urandom(32))
    sealed = box.seal("webhook secret", CTX)
    assert sealed.startswith("sealed:v1:" + box.key_id + ":") and "webhook" not in sealed
    assert box.seal("webhook secret", CTX) != sealed  # a fresh nonce each time
    assert box.open(sealed, CTX) == "webhook secret"
    for elsewhere in (facility_context("south", "handoff_secret"),
                      facility_context("north", "llm_api_key")):
        with pytest.raises(SecretKeyError, match="does not open"):
            box.open(sealed, elsewhere)
    tampered = sealed[:-4] + ("AAAA" if not sealed.endswith("AAAA") else "BBBB")
    with pytest.raises(SecretKeyError):
        box.open(tampered, CTX)


def test_plaintext_from_before_sealing_still_opens_and_needs_sealing() -> None:
    box = SecretBox(os.urandom(32))
    assert box.open("old plaintext", CTX) == "old plaintext"
    assert box.needs_sealing("old plaintext")
    assert not box.needs_sealing(box.seal("x", CTX)) and not box.needs_sealing(None)


def test_another_key_cannot_open_and_rotation_keeps_the_old_key_for_opening() -> None:
    old, new = os.urandom(32), os.urandom(32)
    sealed = SecretBox(old).seal("api key", CTX)
    with pytest.raises(SecretKeyError, match="not configured"):
        SecretBox(new).open(sealed, CTX)
    rotated = SecretBox(new, previous=(old,))
    assert rotated.open(sealed, CTX) == "api key"
    assert rotated.needs_sealing(sealed)  # sealed with the earlier key: re-sealed at start
    assert rotated.open(rotated.seal("api key", CTX), CTX) == "api key"


def test_key_file_is_made_once_with_mode_0600(tmp_path: Path) -> None:
    keys: list[bytes] = []
    threads = [threading.Thread(target=lambda: keys.append(load_or_create_key(tmp_path)))
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(keys)) == 1 and len(keys[0]) == 32
    path = tmp_path / KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert load_or_create_key(tmp_path) == keys[0]


def test_key_from_the_environment_form(tmp_path: Path) -> None:
    key = os.urandom(32)
    box = SecretBox.from_settings(base64.b64encode(key).decode(), tmp_path)
    assert box.key_id == SecretBox(key).key_id
    assert not (tmp_path / KEY_FILE).exists()  # no file when the key is given
    with pytest.raises(SecretKeyError, match="want 32"):
        SecretBox.from_settings(base64.b64encode(b"short").decode(), tmp_path)
    with pytest.raises(SecretKeyError, match="not base64"):
        SecretBox.from_settings("not base64!", tmp_path)


def test_rotating_the_key_file_keeps_every_value_openable(tmp_path: Path) -> None:
    running = SecretBox.from_settings("", tmp_path)  # a service started before the rotation
    before = running.seal("handoff secret", CTX)
    old_id, new_id = rotate_key_file(tmp_path)
    assert old_id == running.key_id and new_id != old_id
    assert stat.S_IMODE((tmp_path / PREVIOUS_DIR / f"{old_id}.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / KEY_FILE).stat().st_mode) == 0o600
    after_rotation = SecretBox.from_settings("", tmp_path)
    assert after_rotation.key_id == new_id
    assert after_rotation.open(before, CTX) == "handoff secret"  # the old key still opens
    resealed = after_rotation.seal("handoff secret", CTX)
    # the running service meets a value sealed with the new key: it re-reads the key file
    assert running.open(resealed, CTX) == "handoff secret" and running.key_id == new_id
