"""The outbound policy (sidecar_core.egress): allow-list forms, every refused address class,
IPv6, the check on every resolved address, and the pinned transport against real servers."""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI, Request

from sidecar_core.egress import AllowEntry, EgressPolicy, EgressRefused, pinned_client
from tests import pki as test_pki
from tests.http_peers import serve


def fake_dns(table: dict[str, list[str]]):  # type: ignore[no-untyped-def]
    async def resolve(host: str, port: int) -> list[str]:
        if host not in table:
            raise OSError(f"no such name {host}")
        return table[host]
    return resolve


@pytest.mark.parametrize("url, why", [
    ("https://127.0.0.1/x", "loopback"),
    ("https://127.8.9.10/x", "loopback"),
    ("https://[::1]:8443/x", "loopback"),
    ("https://[::ffff:127.0.0.1]/x", "loopback"),
    ("https://169.254.169.254/latest/meta-data", "cloud metadata"),
    ("https://169.254.170.2/v2/credentials", "cloud metadata"),
    ("https://[fd00:ec2::254]/", "cloud metadata"),
    ("https://100.100.100.200/", "cloud metadata"),
    ("https://192.0.0.192/", "cloud metadata"),
    ("https://169.254.10.20/", "link-local"),
    ("https://[fe80::1]/", "link-local"),
    ("https://0.0.0.0/", "unspecified"),
    ("https://[::]/", "unspecified"),
    ("https://224.0.0.1/", "multicast"),
    ("https://[ff02::1]/", "multicast"),
    ("https://240.0.0.1/", "reserved"),
    ("https://0.1.2.3/", "unspecified"),
    ("https://[64:ff9b::a9fe:a9fe]/", "cloud metadata"),  # NAT64 of 169.254.169.254
    ("https://[2002:7f00:1::]/", "loopback"),  # 6to4 of 127.0.0.1
    ("https://2130706433/", "loopback"),  # 127.0.0.1 written as one number: resolved first
    ("https://0x7f.1/", "loopback"),
])
async def test_every_refused_address_class(url: str, why: str) -> None:
    with pytest.raises(EgressRefused) as refused:
        await EgressPolicy().check_url(url)
    assert refused.value.reason == "EGRESS_ADDRESS_REFUSED"
    assert f"a {why} address" in refused.value.message
    assert "SIDECAR_EGRESS_ALLOW" in refused.value.message
    assert refused.value.security_event


async def test_https_is_required_unless_listed() -> None:
    policy = EgressPolicy(resolver=fake_dns({"ris.hospital.example": ["10.20.30.40"]}))
    with pytest.raises(EgressRefused) as refused:
        await policy.check_url("http://ris.hospital.example/hook")
    assert refused.value.reason == "EGRESS_NOT_HTTPS"
    ok = await policy.check_url("https://ris.hospital.example/hook")
    assert ok.addresses == ("10.20.30.40",) and ok.port == 443 and not ok.listed
    with pytest.raises(EgressRefused) as dicom:
        await policy.check_dicom("ris.hospital.example", 104, tls=False)
    assert dicom.value.reason == "EGRESS_NOT_TLS"
    assert (await policy.check_dicom("ris.hospital.example", 2762, tls=True)).port == 2762


async def test_a_name_is_refused_if_any_address_it_resolves_to_is() -> None:
    policy = EgressPolicy(resolver=fake_dns({
        "llm.vendor.example": ["203.0.113.7", "169.254.169.254"]}))
    with pytest.raises(EgressRefused) as refused:
        await policy.check_url("https://llm.vendor.example/v1")
    assert "llm.vendor.example resolves to 169.254.169.254" in refused.value.message


async def test_real_resolution_of_localhost_is_refused() -> None:
    with pytest.raises(EgressRefused) as refused:
        await EgressPolicy().check_url("https://localhost:8443/hook")
    assert "localhost resolves to" in refused.value.message


async def test_a_name_that_does_not_resolve_is_refused_but_not_a_security_event() -> None:
    with pytest.raises(EgressRefused) as refused:
        await EgressPolicy(resolver=fake_dns({})).check_url("https://nowhere.example/")
    assert refused.value.reason == "EGRESS_UNRESOLVED" and not refused.value.security_event


@pytest.mark.parametrize("url", ["ftp://host.example/x", "https:///nohost", "http://[::1"])
async def test_not_a_destination(url: str) -> None:
    with pytest.raises(EgressRefused) as refused:
        await EgressPolicy().check_url(url)
    assert refused.value.reason == "EGRESS_INVALID_URL"


@pytest.mark.parametrize("allow, url, allowed", [
    ("127.0.0.1", "http://127.0.0.1:8000/v1", True),
    ("127.0.0.0/8", "http://127.0.0.2:8000/v1", True),
    ("127.0.0.1:8000", "http://127.0.0.1:8000/v1", True),
    ("127.0.0.1:8000", "http://127.0.0.1:8001/v1", False),
    ("localhost", "http://localhost:11434/v1", True),
    ("LOCALHOST:11434", "http://localhost:11434/v1", True),
    ("localhost:11434", "http://localhost:11435/v1", False),
    ("::1", "http://[::1]:9000/", True),
    ("[::1]:9000", "http://[::1]:9000/", True),
    ("[::1]:9000", "http://[::1]:9001/", False),
    ("::1/128", "http://[::1]:9001/", True),
    ("127.0.0.1", "http://[::ffff:127.0.0.1]:80/", True),  # the mapped form of a listed v4
    ("10.0.0.0/8", "http://127.0.0.1/", False),
    ("169.254.169.254", "http://169.254.169.254/latest", True),  # the operator said so
    ("llm.local", "http://localhost:8000/", False),
])
async def test_allow_list_forms(allow: str, url: str, allowed: bool) -> None:
    policy = EgressPolicy.parse(allow)
    if allowed:
        assert (await policy.check_url(url)).listed
    else:
        with pytest.raises(EgressRefused):
            await policy.check_url(url)


async def test_a_listed_network_lifts_only_the_address_rule_of_its_addresses() -> None:
    policy = EgressPolicy.parse("10.1.0.0/16", resolver=fake_dns({
        "pacs.example": ["10.1.2.3"], "mixed.example": ["10.1.2.3", "127.0.0.1"]}))
    assert (await policy.check_url("http://pacs.example/")).listed
    with pytest.raises(EgressRefused) as refused:
        await policy.check_url("https://mixed.example/")
    assert refused.value.reason == "EGRESS_ADDRESS_REFUSED"


@pytest.mark.parametrize("bad", ["", "host:port", "host:70000", "10.0.0.0/33", "a b",
                                 "[::1]x", "http://x/"])
def test_bad_allow_entries_name_themselves(bad: str) -> None:
    with pytest.raises(ValueError):
        AllowEntry.parse(bad)
    if bad:
        with pytest.raises(ValueError, match="expected|not|port|empty"):
            EgressPolicy.parse(f"127.0.0.1,{bad}")


def _echo() -> FastAPI:
    app = FastAPI()

    @app.get("/who")
    async def who(request: Request) -> dict[str, str]:
        return {"host": request.headers["host"], "peer": request.client.host
                if request.client else ""}

    return app


async def test_pinned_client_connects_to_the_checked_address_and_keeps_the_name() -> None:
    # "hook.example" resolves (once, at the check) to 127.0.0.1; the request keeps the name
    # in its Host header while the connection goes to the address that was checked.
    with serve(_echo()) as port:
        policy = EgressPolicy.parse("hook.example",
                                    resolver=fake_dns({"hook.example": ["127.0.0.1"]}))
        destination = await policy.check_url(f"http://hook.example:{port}/who")
        async with pinned_client(destination, 10) as http:
            reply = await http.get(f"http://hook.example:{port}/who")
            assert reply.json() == {"host": f"hook.example:{port}", "peer": "127.0.0.1"}
            # any other host through the same client is refused, not resolved
            with pytest.raises(EgressRefused):
                await http.get(f"http://127.0.0.1:{port}/who")


async def test_pinned_client_speaks_tls_to_the_name(tmp_path: Path) -> None:
    ca, cert, key = test_pki.web_certificate(tmp_path)
    with serve(_echo(), ssl_certfile=str(cert), ssl_keyfile=str(key)) as port:
        trust = ssl.create_default_context(cafile=str(ca))
        policy = EgressPolicy.parse("localhost",
                                    resolver=fake_dns({"localhost": ["127.0.0.1"]}))
        destination = await policy.check_url(f"https://localhost:{port}/who")
        async with pinned_client(destination, 10, verify=trust) as http:
            assert (await http.get(f"https://localhost:{port}/who")).json()["host"] == \
                f"localhost:{port}"
        # the certificate is checked against the name: a CA we do not trust fails
        async with pinned_client(destination, 10) as http:
            with pytest.raises(httpx.ConnectError):
                await http.get(f"https://localhost:{port}/who")
