"""Secrets at rest: settings that are credentials (a facility's handoff signing secret, its LLM
API key) are stored sealed with AES-256-GCM under a key kept outside the database.

The key is `SIDECAR_SECRET_KEY` (base64 of 32 bytes) or, without it, DATA_DIR/keys/secrets.key
(made on first use, mode 0600). A sealed value reads `sealed:v1:<key id>:<base64 nonce+ct>`;
the associated data names the row and the column (`facility:<name>:<column>`), so a sealed value
copied to another facility or column does not open. A value without the prefix is plaintext
from before sealing: it still opens (as itself) and is sealed at the next start of the workflow
service (`seal_plaintext` in workflow_svc.operations.facility_settings).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

PREFIX = "sealed:v1:"
KEY_FILE = Path("keys") / "secrets.key"
PREVIOUS_DIR = Path("keys") / "previous"  # keys that still open, after `sidecar secrets rotate`


class SecretKeyError(Exception):
    """No usable key, or a sealed value that this key cannot open."""


def key_id(key: bytes) -> str:
    """A short, non-secret name of a key (which key sealed a value)."""
    return hashlib.sha256(b"sidecar secret key id\0" + key).hexdigest()[:8]


def decode_key(text: str, where: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise SecretKeyError(f"{where}: not base64") from None
    if len(key) != 32:
        raise SecretKeyError(f"{where}: {len(key)} bytes, want 32 (base64 of 32 random bytes, "
                             "e.g. `openssl rand -base64 32`)")
    return key


def load_or_create_key(data_dir: Path) -> bytes:
    """DATA_DIR/keys/secrets.key, made (0600, in a 0700 folder) when it does not exist yet;
    two processes making it at once agree on one."""
    path = data_dir / KEY_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # written whole under a temporary name, then linked in place: a reader never sees a
        # half-written key, and of two writers the first link wins
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(base64.b64encode(os.urandom(32)) + b"\n")
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return decode_key(path.read_text(), str(path))


class SecretBox:
    """Seals and opens secret settings with one current key and, after a rotation, earlier
    keys that still open (never seal)."""

    def __init__(self, key: bytes, previous: tuple[bytes, ...] = (),
                 data_dir: Path | None = None) -> None:
        self.key_id = key_id(key)
        self._keys = {key_id(k): AESGCM(k) for k in (*previous, key)}
        self._current = AESGCM(key)
        self._data_dir = data_dir  # the key file's data dir: re-read after a rotation

    @classmethod
    def from_settings(cls, secret_key: str, data_dir: Path,
                      previous_keys: tuple[str, ...] = ()) -> SecretBox:
        """SIDECAR_SECRET_KEY (and SIDECAR_SECRET_PREVIOUS_KEYS), or the key file of the data
        dir and the earlier keys a rotation left in DATA_DIR/keys/previous."""
        previous = [decode_key(k, "SIDECAR_SECRET_PREVIOUS_KEYS") for k in previous_keys]
        if secret_key:
            return cls(decode_key(secret_key, "SIDECAR_SECRET_KEY"), tuple(previous))
        key = load_or_create_key(data_dir)
        folder = data_dir / PREVIOUS_DIR
        if folder.is_dir():
            previous += [decode_key(f.read_text(), str(f)) for f in sorted(folder.glob("*.key"))]
        return cls(key, tuple(previous), data_dir)

    def _reread(self) -> None:
        """After `sidecar secrets rotate` in a running system: take up the key file's new key
        (and keep every key this box had for opening)."""
        if self._data_dir is None:
            return
        fresh = SecretBox.from_settings("", self._data_dir)
        self._keys = {**self._keys, **fresh._keys}
        self.key_id, self._current = fresh.key_id, fresh._current

    @staticmethod
    def is_sealed(value: str | None) -> bool:
        return bool(value) and str(value).startswith(PREFIX)

    def seal(self, plaintext: str, context: str) -> str:
        nonce = os.urandom(12)
        sealed = self._current.encrypt(nonce, plaintext.encode(), context.encode())
        return f"{PREFIX}{self.key_id}:" + base64.b64encode(nonce + sealed).decode()

    def open(self, value: str | None, context: str) -> str:
        """The plaintext of a sealed value (or a plaintext one as it is); SecretKeyError when
        the key that sealed it is not here or the value was moved or altered."""
        if not value:
            return ""
        if not value.startswith(PREFIX):
            return value
        kid, _, body = value[len(PREFIX):].partition(":")
        if kid not in self._keys:
            self._reread()
        aead = self._keys.get(kid)
        if aead is None:
            raise SecretKeyError(f"{context}: sealed with key {kid}, which is not configured "
                                 f"(current key {self.key_id})")
        try:
            raw = base64.b64decode(body, validate=True)
            return aead.decrypt(raw[:12], raw[12:], context.encode()).decode()
        except (InvalidTag, binascii.Error, ValueError):
            raise SecretKeyError(f"{context}: the sealed value does not open (altered, or "
                                 "moved from another row)") from None

    def needs_sealing(self, value: str | None) -> bool:
        """A plaintext value, or one sealed with an earlier key (after a rotation)."""
        if not value:
            return False
        if not value.startswith(PREFIX):
            return True
        return not value[len(PREFIX):].startswith(self.key_id + ":")


def rotate_key_file(data_dir: Path) -> tuple[str, str]:
    """Replaces DATA_DIR/keys/secrets.key by a new random key, keeping the old one in
    DATA_DIR/keys/previous/<id>.key (so values sealed with it still open until re-sealed);
    returns (old id, new id). The old key is kept before the new one is in place: a crash at
    any point leaves every sealed value openable."""
    old = load_or_create_key(data_dir)
    folder = data_dir / PREVIOUS_DIR
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    kept = folder / f"{key_id(old)}.key"
    _write_private(kept, base64.b64encode(old) + b"\n")
    new = os.urandom(32)
    path = data_dir / KEY_FILE
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}")
    _write_private(tmp, base64.b64encode(new) + b"\n")
    os.replace(tmp, path)
    return key_id(old), key_id(new)


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())


def facility_context(facility: str, column: str) -> str:
    """The associated data of a facility's secret setting."""
    return f"facility:{facility}:{column}"
