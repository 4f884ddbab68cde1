"""OpenID Connect sign-on on the running product (`sidecar up` of its own, beside a real
OpenID provider, node-oidc-provider, started here), driven in Chromium as a person does:
"Sign in with …", the provider's sign-in page, the worklist of the facility the claims give;
a user whose claims give no facility sees nothing, one with no role is refused (audited), a
disabled SSO account is refused; logout ends the provider's session too; a provider that is
down gives a clear message and local break-glass still works; SIDECAR_LOCAL_LOGIN=off refuses
the local form."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from sidecar_synth import generate
from tests.acceptance import browser as b
from tests.acceptance.stack import Stack, new_stack, stack_root
from tests.oidc_peer import CLIENT_ID, CLIENT_SECRET, OidcPeer

pytest.importorskip("playwright")
from playwright.sync_api import expect, sync_playwright  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.acceptance, pytest.mark.browser]

NORTH, SOUTH = "sso_north", "sso_south"
PROVIDER = "Hospital SSO"
SIGN_IN = f"Sign in with {PROVIDER}"
# The provider's accounts (login → claims), Keycloak-shaped: realm roles and a facility claim.
ACCOUNTS: dict[str, dict[str, Any]] = {
    "rad.north": {"preferred_username": "rad.north", "name": "Dr North",
                  "realm_access": {"roles": ["offline_access", "sidecar-radiologist"]},
                  "facility": ["HOSP-NORTH"]},
    "rad.nowhere": {"preferred_username": "rad.nowhere",
                    "realm_access": {"roles": ["sidecar-radiologist"]},
                    "facility": ["HOSP-ELSEWHERE"]},
    "boss": {"preferred_username": "boss", "realm_access": {"roles": ["sidecar-admin"]}},
    "visitor": {"preferred_username": "visitor", "realm_access": {"roles": ["offline_access"]}},
}


@dataclass
class Site:
    stack: Stack
    peer: OidcPeer
    accession: str


def _wait_listed(stack: Stack, accession: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    with stack.client() as http:
        while time.monotonic() < deadline:
            rows = http.get("/api/v1/studies", params={"accession": accession}).json()
            if rows.get("studies"):
                return
            time.sleep(1)
    raise AssertionError(f"study {accession} never reached the worklist")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    assert b.BUILT_APP.is_file(), "the review app is not built: run `make install`"
    with stack_root("sidecar-sso-") as root:
        stack = new_stack(root, facilities=(NORTH, SOUTH))
        base = stack.base_url
        peer = OidcPeer(ACCOUNTS, [base + "/api/v1/auth/oidc/callback"], [base + "/"])
        peer.start()
        stack.env.update({
            "SIDECAR_OIDC_ISSUER": peer.issuer, "SIDECAR_OIDC_CLIENT_ID": CLIENT_ID,
            "SIDECAR_OIDC_CLIENT_SECRET": CLIENT_SECRET,
            "SIDECAR_OIDC_ROLE_CLAIM": "realm_access.roles",
            "SIDECAR_OIDC_ROLE_MAP": json.dumps({"sidecar-radiologist": "radiologist",
                                                 "sidecar-admin": "admin"}),
            "SIDECAR_OIDC_FACILITY_CLAIM": "facility",
            "SIDECAR_OIDC_FACILITY_MAP": json.dumps({"HOSP-NORTH": NORTH,
                                                     "HOSP-SOUTH": SOUTH}),
            "SIDECAR_OIDC_DISPLAY_NAME": PROVIDER,
            # the provider is a loopback peer over http: listed, as an operator would
            "SIDECAR_EGRESS_ALLOW": "127.0.0.1",
            "SIDECAR_OIDC_DISCOVERY_CACHE_S": "0",
        })
        try:
            stack.start()
            study = tmp_path_factory.mktemp("sso") / "mr"
            truth = generate("brain-mr", study, 3)
            done = stack.cli("ingest", str(study), "--facility", NORTH,
                             "--target", stack.address("ingest"), "--complete")
            assert done.returncode == 0, done.stderr
            _wait_listed(stack, truth.accession_number)
            yield Site(stack, peer, truth.accession_number)
        finally:
            stack.stop()
            peer.stop()


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    with sync_playwright() as playwright:
        browser = b.launch(playwright)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(chromium: Any) -> Iterator[Any]:
    context = chromium.new_context(viewport={"width": 1280, "height": 800})
    context.add_init_script(b.CSP_PROBE)
    tab = context.new_page()
    try:
        yield tab
    finally:
        context.close()


def _at_provider(page: Any, login: str) -> None:
    """The provider's own sign-in page: login and password."""
    page.wait_for_selector("input[name=login]")
    page.fill("input[name=login]", login)
    page.fill("input[name=password]", "any password the test provider accepts")
    page.click("button[type=submit]")


def _sign_in(page: Any, site: Site, login: str) -> None:
    page.goto(site.stack.base_url + "/")
    page.get_by_role("link", name=SIGN_IN).click()
    _at_provider(page, login)


def _shot(page: Any, name: str) -> None:
    b.ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(b.ARTIFACTS / f"sso-{name}.png"))


def _events(site: Site, kind: str, username: str) -> list[dict[str, Any]]:
    rows = site.stack.sql("SELECT context FROM audit_events WHERE type = %s AND "
                          "context->>'username' = %s ORDER BY seq", kind, username)
    return [r[0] for r in rows]


def test_radiologist_signs_in_sees_the_facility_study_and_logs_out_at_the_provider(
        site: Site, page: Any) -> None:
    _sign_in(page, site, "rad.north")
    page.wait_for_selector("table.worklist")
    expect(page.get_by_text(site.accession)).to_be_visible(timeout=30_000)
    expect(page.locator("header .user")).to_have_text("rad.north (radiologist)")
    _shot(page, "worklist")
    # The same session as a local login: the HttpOnly cookie, the same token rules.
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    session = cookies["sidecar_session"]
    with httpx.Client(base_url=site.stack.base_url, timeout=30) as http:
        me = http.get("/api/v1/me", headers={"Authorization": f"Bearer {session}"})
        assert me.status_code == 200 and me.json()["facilities"] == [NORTH], me.text
    # OHIF rides on the same session: the viewer hand-over of the signed-in user.
    with httpx.Client(base_url=site.stack.base_url, timeout=30,
                      headers={"Authorization": f"Bearer {session}"}) as http:
        [row] = http.get("/api/v1/studies", params={"accession": site.accession}
                         ).json()["studies"]
        code = http.post("/api/v1/viewer/handover", json={"study_id": row["id"]})
        assert code.status_code == 200, code.text
        viewer = http.post("/api/v1/viewer/token", json={"code": code.json()["code"]})
        assert viewer.status_code == 200, viewer.text
    # Audited with the method, the issuer and the subject; the account provisioned just in time.
    login = _events(site, "auth.login_succeeded", "rad.north")[-1]
    assert (login["method"], login["issuer"], login["subject"]) == (
        "oidc", site.peer.issuer, "rad.north")
    assert site.stack.sql("SELECT role, oidc_subject FROM users WHERE username = %s",
                          "rad.north") == [("radiologist", "rad.north")]
    # Logout ends the session here and at the provider (its confirmation page), then home.
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(f"{site.peer.issuer}/**")
    page.get_by_role("button", name="Yes, sign me out").click()
    page.wait_for_url(site.stack.base_url + "/**")
    expect(page.get_by_role("link", name=SIGN_IN)).to_be_visible(timeout=30_000)
    with httpx.Client(base_url=site.stack.base_url, timeout=30) as http:
        gone = http.get("/api/v1/me", headers={"Authorization": f"Bearer {session}"})
        assert gone.status_code == 401 and gone.json()["error"]["reason"] == "TOKEN_REVOKED"
    # A second "Sign in" asks for credentials again: the provider's session ended too.
    page.get_by_role("link", name=SIGN_IN).click()
    page.wait_for_selector("input[name=login]")
    assert page.url.startswith(site.peer.issuer)


def test_a_user_whose_claims_give_no_facility_sees_nothing(site: Site, page: Any) -> None:
    _sign_in(page, site, "rad.nowhere")
    page.wait_for_selector("table.worklist")
    expect(page.locator("header .user")).to_have_text("rad.nowhere (radiologist)")
    page.wait_for_timeout(1500)  # the worklist has loaded (and stays empty)
    assert page.locator("table.worklist tbody tr").filter(has_text=site.accession).count() == 0
    session = {c["name"]: c["value"] for c in page.context.cookies()}["sidecar_session"]
    with httpx.Client(base_url=site.stack.base_url, timeout=30,
                      headers={"Authorization": f"Bearer {session}"}) as http:
        assert http.get("/api/v1/me").json()["facilities"] == []
        listed = http.get("/api/v1/studies")
        assert listed.status_code in (200, 403), listed.text
        assert listed.status_code == 403 or listed.json()["studies"] == []
    _shot(page, "no-facility")


def test_a_user_with_no_role_is_refused_with_a_message_and_audited(site: Site,
                                                                    page: Any) -> None:
    _sign_in(page, site, "visitor")
    expect(page.get_by_role("alert")).to_contain_text("no role", timeout=30_000)
    assert not [c for c in page.context.cookies() if c["name"] == "sidecar_session"]
    refused = _events(site, "auth.login_failed", "visitor")
    assert refused and refused[-1]["reason"] == "NO_ROLE" and refused[-1]["method"] == "oidc"
    assert site.stack.sql("SELECT count(*) FROM users WHERE username = 'visitor'") == [(0,)]


def test_a_disabled_sso_account_is_refused(site: Site, chromium: Any) -> None:
    for attempt in ("first", "disabled"):
        context = chromium.new_context()
        page = context.new_page()
        try:
            _sign_in(page, site, "boss")
            if attempt == "first":
                page.wait_for_selector("table.worklist")  # an admin: every facility
                expect(page.get_by_text(site.accession)).to_be_visible(timeout=30_000)
                done = site.stack.cli("user", "disable", "boss", "--operator", "privacy-office")
                assert done.returncode == 0, done.stdout + done.stderr
            else:
                expect(page.get_by_role("alert")).to_contain_text("disabled", timeout=30_000)
        finally:
            context.close()
    assert _events(site, "auth.login_failed", "boss")[-1]["reason"] == "ACCOUNT_DISABLED"


def test_a_forged_callback_is_refused_and_audited(site: Site) -> None:
    with httpx.Client(base_url=site.stack.base_url, timeout=30,
                      cookies={"sidecar_oidc": "not-a-sealed-cookie"}) as http:
        reply = http.get("/api/v1/auth/oidc/callback", params={"code": "x", "state": "y"})
    assert reply.status_code == 303
    assert reply.headers["location"] == "/?sso_error=SIGN_IN_EXPIRED"
    assert "sidecar_session" not in reply.cookies
    rows = site.stack.sql("SELECT context FROM audit_events WHERE type = 'auth.login_failed' "
                          "AND context->>'reason' = 'SIGN_IN_EXPIRED'")
    assert rows


def test_provider_down_gives_a_clear_message_and_local_break_glass_works(
        site: Site, page: Any) -> None:
    site.peer.stop()
    try:
        with httpx.Client(base_url=site.stack.base_url, timeout=30) as http:
            methods = http.get("/api/v1/auth/methods").json()
            assert methods["local"] is True and methods["oidc"]["available"] is False
            start = http.get("/api/v1/auth/oidc/start")
            assert start.status_code == 303, start.text
            assert start.headers["location"] == "/?sso_error=PROVIDER_UNAVAILABLE"
        page.goto(site.stack.base_url + "/")
        expect(page.get_by_text(f"Sign-in with {PROVIDER} is unavailable")).to_be_visible(
            timeout=30_000)
        _shot(page, "provider-down")
        b.login(page, site.stack.base_url, site.stack.admin, site.stack.password)
        expect(page.get_by_text(site.accession)).to_be_visible(timeout=30_000)
    finally:
        site.peer.start()


def test_local_login_off_refuses_the_local_form(site: Site, page: Any) -> None:
    """Last: restarts the stack with SIDECAR_LOCAL_LOGIN=off."""
    site.stack.stop()
    site.stack.env["SIDECAR_LOCAL_LOGIN"] = "off"
    site.stack.start()
    with httpx.Client(base_url=site.stack.base_url, timeout=30) as http:
        refused = http.post("/api/v1/auth/login", json={"username": site.stack.admin,
                                                         "password": site.stack.password})
        assert refused.status_code == 403
        assert refused.json()["error"]["reason"] == "LOCAL_LOGIN_DISABLED"
        assert http.get("/api/v1/auth/methods").json()["local"] is False
    page.goto(site.stack.base_url + "/")
    expect(page.get_by_text("Local accounts are switched off")).to_be_visible(timeout=30_000)
    assert page.locator("#password").count() == 0
    # SSO still signs in.
    page.get_by_role("link", name=SIGN_IN).click()
    _at_provider(page, "rad.north")
    page.wait_for_selector("table.worklist")
    expect(page.get_by_text(site.accession)).to_be_visible(timeout=30_000)
