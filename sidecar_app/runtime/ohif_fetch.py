"""`make install`'s OHIF step: `npm pack` the pinned @ohif/app, check its sha512, unpack dist/.

The lock file (deploy/ohif/ohif.lock.json) names the package, its version and the registry's
integrity string; the tarball is checked against it before a byte of it is unpacked. The
prebuilt viewer lands in `.ohif/dist` (git-ignored) with `.ohif/VERSION` naming what it is.
Without npm the step says how to add the viewer later and leaves `sidecar up` without it.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from sidecar_app.runtime.embedded import REPO_ROOT

LOCK_FILE = REPO_ROOT / "deploy" / "ohif" / "ohif.lock.json"
DEFAULT_DIR = REPO_ROOT / ".ohif"


class IntegrityError(RuntimeError):
    """The downloaded tarball is not the one the lock file names."""


@dataclass(frozen=True)
class OhifLock:
    package: str
    version: str
    integrity: str  # "sha512-<base64>", as npm's registry publishes it
    tarball_dist: str

    @property
    def spec(self) -> str:
        return f"{self.package}@{self.version}"

    @classmethod
    def load(cls, path: Path = LOCK_FILE) -> OhifLock:
        data = json.loads(path.read_text())
        return cls(data["package"], data["version"], data["integrity"], data["tarball_dist"])


def integrity_of(path: Path) -> str:
    digest = hashlib.sha512()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return "sha512-" + base64.b64encode(digest.digest()).decode()


def check_integrity(tarball: Path, lock: OhifLock) -> None:
    found = integrity_of(tarball)
    if found != lock.integrity:
        raise IntegrityError(f"{tarball.name}: integrity {found} differs from the pinned "
                             f"{lock.integrity} in {LOCK_FILE.name}; refusing to unpack")


def installed_version(target: Path) -> str:
    version = target / "VERSION"
    index = target / "dist" / "index.html"
    return version.read_text().strip() if version.exists() and index.exists() else ""


def unpack(tarball: Path, lock: OhifLock, target: Path) -> None:
    """Extracts only `package/dist/` (no links, nothing outside it) into target/dist, atomically."""
    prefix = lock.tarball_dist.rstrip("/") + "/"
    target.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target, prefix=".unpack-"))
    try:
        with tarfile.open(tarball, "r:gz") as tar:
            members = [m for m in tar.getmembers()
                       if m.name.startswith(prefix) and (m.isfile() or m.isdir())]
            for m in members:
                m.name = m.name[len(prefix):]
            members = [m for m in members if m.name]
            if hasattr(tarfile, "data_filter"):
                tar.extractall(staging, members=members, filter="data")
            else:  # Python 3.11 before 3.11.4 (Debian bookworm's 3.11.2): no extraction filters
                for m in members:
                    if m.name.startswith("/") or ".." in Path(m.name).parts:
                        raise IntegrityError(f"{tarball.name}: unsafe path {m.name!r}")
                    m.mode &= 0o755
                tar.extractall(staging, members=members)
        staging.chmod(0o755)  # mkdtemp's 0700 would hide the bundle from a service user
        if not (staging / "index.html").exists():
            raise IntegrityError(f"{tarball.name} holds no {prefix}index.html")
        old = target / "dist"
        if old.exists():
            shutil.rmtree(old)
        staging.rename(old)
        (target / "VERSION").write_text(lock.spec + "\n")
    finally:
        if staging.exists():
            shutil.rmtree(staging)


def fetch(target: Path, lock: OhifLock, tarball: Path | None = None) -> str:
    """Installs the pinned viewer into `target` unless it is there; returns what it did."""
    if installed_version(target) == lock.spec:
        return f"OHIF {lock.spec} already in {target}"
    with tempfile.TemporaryDirectory(prefix="ohif-pack-") as tmp:
        if tarball is None:
            npm = shutil.which("npm")
            if npm is None:
                raise FileNotFoundError("npm")
            subprocess.run([npm, "pack", lock.spec, "--silent", "--pack-destination", tmp],
                           check=True, stdout=subprocess.DEVNULL)
            packed = sorted(Path(tmp).glob("*.tgz"))
            if not packed:
                raise RuntimeError(f"npm pack {lock.spec} wrote no tarball")
            tarball = packed[0]
        check_integrity(tarball, lock)
        unpack(tarball, lock, target)
    return f"OHIF {lock.spec} installed in {target / 'dist'}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--target", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--tarball", type=Path, help="a tarball already downloaded (checked)")
    args = parser.parse_args(argv)
    lock = OhifLock.load()
    try:
        print(fetch(args.target, lock, args.tarball))
    except FileNotFoundError:
        print(f"npm not found: the OHIF viewer is not installed. Install Node.js/npm and run "
              f"`make install` again (it fetches {lock.spec}); `sidecar up` runs without it.",
              file=sys.stderr)
        return 0
    except IntegrityError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except subprocess.CalledProcessError as exc:
        print(f"error: npm pack {lock.spec} failed ({exc.returncode}); the viewer is not "
              "installed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
