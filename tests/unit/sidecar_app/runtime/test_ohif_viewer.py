"""The OHIF step of `make install` (pinned, sha512-checked, only dist/ unpacked) and the viewer
process's app (generated app-config.js, single-page routes, a hint when OHIF is missing)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from sidecar_app.runtime.ohif_fetch import (
    IntegrityError,
    OhifLock,
    fetch,
    installed_version,
    integrity_of,
)
from sidecar_app.runtime.supervisor import viewer_line, viewer_origins
from sidecar_app.runtime.viewer import (
    ViewerSettings,
    app_config_js,
    content_security_policy,
    create_app,
    run,
)
from sidecar_core.security.edge_tls import HSTS, EdgeConfigError


def _tarball(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


FILES = {"package/dist/index.html": b"<!doctype html><title>OHIF</title>",
         "package/dist/app.bundle.js": b"console.log('ohif')",
         "package/dist/app-config.js": b"window.config = {public: true};",
         "package/README.md": b"not part of the viewer"}


def _lock(tarball: Path) -> OhifLock:
    return OhifLock("@ohif/app", "3.13.2", integrity_of(tarball), "package/dist")


def test_fetch_checks_the_pinned_integrity_then_unpacks_dist_only(tmp_path: Path) -> None:
    tarball = _tarball(tmp_path / "ohif.tgz", FILES)
    target = tmp_path / ".ohif"
    assert "installed" in fetch(target, _lock(tarball), tarball)
    assert installed_version(target) == "@ohif/app@3.13.2"
    assert sorted(p.name for p in (target / "dist").iterdir()) == [
        "app-config.js", "app.bundle.js", "index.html"]
    assert "already" in fetch(target, _lock(tarball), tarball)


def test_fetch_refuses_a_tarball_that_is_not_the_pinned_one(tmp_path: Path) -> None:
    good = _tarball(tmp_path / "good.tgz", FILES)
    bad = _tarball(tmp_path / "bad.tgz", {**FILES, "package/dist/app.bundle.js": b"evil()"})
    target = tmp_path / ".ohif"
    with pytest.raises(IntegrityError, match="refusing to unpack"):
        fetch(target, _lock(good), bad)
    assert not (target / "dist").exists() and installed_version(target) == ""


def test_the_committed_lock_pins_ohif_3_13_2_by_sha512() -> None:
    lock = OhifLock.load()
    assert lock.spec == "@ohif/app@3.13.2"
    assert lock.integrity.startswith("sha512-") and len(lock.integrity) == 95


def test_app_config_points_the_dicomweb_source_at_the_gateway() -> None:
    text = app_config_js("http://127.0.0.1:8080/dicomweb")
    start = text.index("const sidecarConfig = ") + len("const sidecarConfig = ")
    config = json.loads(text[start:text.index(";\nconst sidecarHandoverUrl")])
    source = config["dataSources"][0]
    assert config["defaultDataSourceName"] == source["sourceName"] == "sidecar"
    assert source["namespace"] == "@ohif/extension-default.dataSourcesModule.dicomweb"
    for root in ("qidoRoot", "wadoRoot", "wadoUriRoot"):
        assert source["configuration"][root] == "http://127.0.0.1:8080/dicomweb"
    assert "/studies" not in source["configuration"]["wadoRoot"]


def test_app_config_exchanges_the_code_and_never_puts_a_token_in_a_url() -> None:
    """window.config is the function OHIF's appInit awaits: it removes `code` from the address
    bar, POSTs it to the gateway's hand-over endpoint and hands OHIF an Authorization header."""
    text = app_config_js("https://gw.example:8443/dicomweb")
    assert 'const sidecarHandoverUrl = "https://gw.example:8443/api/v1/viewer/token";' in text
    assert "window.config = async function" in text
    assert "searchParams.delete('code')" in text and "history.replaceState" in text
    assert text.index("history.replaceState") < text.index("await fetch(")
    assert "method: 'POST'" in text and "credentials: 'omit'" in text
    assert "userAuthenticationService" in text and "setServiceImplementation" in text
    assert "searchParams.set(" not in text and "token=" not in text


def test_viewer_sends_a_csp_with_frame_ancestors_and_no_referrer(tmp_path: Path) -> None:
    tarball = _tarball(tmp_path / "ohif.tgz", FILES)
    fetch(tmp_path / ".ohif", _lock(tarball), tarball)
    settings = ViewerSettings(viewer_dir=tmp_path / ".ohif", gateway_port=9999)
    with TestClient(create_app(settings)) as http:
        for path in ("/viewer", "/app-config.js", "/app.bundle.js"):
            reply = http.get(path)
            csp = reply.headers["content-security-policy"]
            assert "frame-ancestors 'none'" in csp and "object-src 'none'" in csp
            assert "connect-src 'self' http://127.0.0.1:9999;" in csp
            script = next(d for d in csp.split("; ") if d.startswith("script-src "))
            assert "'unsafe-inline'" not in script and "*" not in script
            assert reply.headers["referrer-policy"] == "no-referrer"
    inline = content_security_policy(b"<script>window.PUBLIC_URL='/'</script>"
                                     b"<script src=/a.js></script>", "http://gw:1/dicomweb")
    digest = base64.b64encode(hashlib.sha256(b"window.PUBLIC_URL='/'").digest()).decode()
    assert f"'sha256-{digest}'" in inline and inline.count("'sha256-") == 1


def test_viewer_serves_ohif_its_config_and_spa_routes(tmp_path: Path) -> None:
    tarball = _tarball(tmp_path / "ohif.tgz", FILES)
    fetch(tmp_path / ".ohif", _lock(tarball), tarball)
    settings = ViewerSettings(viewer_dir=tmp_path / ".ohif", gateway_port=9999)
    with TestClient(create_app(settings)) as http:
        config = http.get("/app-config.js")
        assert config.status_code == 200 and "127.0.0.1:9999/dicomweb" in config.text
        assert "public" not in config.text  # the package's own config is never served
        assert http.get("/app.bundle.js").text == "console.log('ohif')"
        page = http.get("/viewer", params={"StudyInstanceUIDs": "1.2.3"})
        assert page.status_code == 200 and "<title>OHIF</title>" in page.text
        assert http.get("/missing.bundle.js").status_code == 404
        assert http.get("/../../etc/passwd").status_code in (200, 404)
        assert "root:" not in http.get("/..%2F..%2F..%2Fetc%2Fpasswd").text


def test_without_ohif_the_viewer_and_sidecar_up_say_how_to_add_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = ViewerSettings(viewer_dir=tmp_path / "absent")
    with TestClient(create_app(settings)) as http:
        reply = http.get("/viewer")
        assert reply.status_code == 503 and "make install" in reply.text
    monkeypatch.setenv("SIDECAR_VIEWER_DIR", str(tmp_path / "absent"))
    line = viewer_line({"viewer": 8081, "gateway": 8080})
    assert "OHIF viewer not installed" in line and "make install" in line
    assert viewer_origins(8081) == ["http://127.0.0.1:8081", "http://localhost:8081"]


def test_viewer_sends_hsts_over_https_only(tmp_path: Path) -> None:
    settings = ViewerSettings(viewer_dir=tmp_path / ".ohif", gateway_port=9999)
    with TestClient(create_app(settings), base_url="https://viewer") as https:
        assert https.get("/app-config.js").headers["strict-transport-security"] == HSTS
    with TestClient(create_app(settings)) as http:
        assert "strict-transport-security" not in http.get("/app-config.js").headers


def test_viewer_refuses_plain_http_off_loopback(tmp_path: Path) -> None:
    settings = ViewerSettings(viewer_dir=tmp_path / ".ohif", viewer_host="0.0.0.0")
    with pytest.raises(EdgeConfigError, match="OHIF viewer over plain HTTP on 0.0.0.0:8081"):
        asyncio.run(run(settings))
