"""One `sidecar up --tls-cert --tls-key` shared by the modules that test the product's edges
(HTTPS, DICOM TLS, MLLP over TLS, input bounds, egress, the viewer hand-over), each module on two
facilities of its own; a module that needs other start-up settings starts its own stack.

The certificate is a hospital's web certificate for 127.0.0.1 and localhost from a CA of its own
(not the mesh's), given to `sidecar up` as a user would; the stack serves the gateway and the
viewer over HTTPS and every TLS listener that the certificate turns on. Its DICOM TLS port asks
for client certificates of a DICOM client CA of its own (SIDECAR_DICOM_TLS_CLIENT_CA), which
issued `dicom_client_cert`/`_key`."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from sidecar_core.security import pki
from sidecar_core.security.identity import Identity
from tests import pki as test_pki
from tests.acceptance.stack import Stack, new_stack, site_on, stack_root
from tests.servers import free_port
from tests.sharing import Shared, under


@dataclass
class EdgeStack(Stack):
    """A running `sidecar up` with a web certificate: `web_ca`, `web_cert` and `web_key` are the
    files it was started with; HTTP calls go over https and trust `web_ca`."""

    web_ca: Path = field(default_factory=Path)
    web_cert: Path = field(default_factory=Path)
    web_key: Path = field(default_factory=Path)
    dicom_client_cert: Path = field(default_factory=Path)
    dicom_client_key: Path = field(default_factory=Path)
    # where the stack sends its audit (SIDECAR_AUDIT_SYSLOG=tls://127.0.0.1:PORT, trusting
    # web_ca): tests/security/test_atna_up.py starts the repository there
    audit_syslog_port: int = 0

    @property
    def base_url(self) -> str:
        return f"https://127.0.0.1:{self.ports['gateway']}"

    @property
    def viewer_url(self) -> str:
        return f"https://127.0.0.1:{self.ports['viewer']}"

    def trusting(self) -> ssl.SSLContext:
        """A client context that trusts the stack's web CA (and nothing else)."""
        return ssl.create_default_context(cafile=str(self.web_ca))

    def login(self, username: str | None = None, password: str | None = None) -> str:
        reply = httpx.post(f"{self.base_url}/api/v1/auth/login", timeout=30,
                           verify=self.trusting(),
                           json={"username": username or self.admin,
                                 "password": password or self.password})
        reply.raise_for_status()
        return str(reply.json()["access_token"])

    def client(self, token: str | None = None) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=60, verify=self.trusting(),
                            headers={"Authorization": f"Bearer {token or self.login()}"})


@contextmanager
def _edge_up() -> Iterator[EdgeStack]:
    with stack_root("sidecar-edge-") as root:
        ca, cert, key = test_pki.web_certificate(root, "Hospital web CA")
        clients = pki.Authority.create("Hospital DICOM client CA")
        issued = clients.issue(Identity("adapter", "modality", "edge"), server=False)
        client_ca, client_cert, client_key = (root / "dicom-client-ca.crt",
                                              root / "dicom-client.crt", root / "dicom-client.key")
        for path, pem in ((client_ca, clients.cert_pem), (client_cert, issued.cert_pem),
                          (client_key, issued.key_pem)):
            path.write_bytes(pem)
        plain = new_stack(root, facilities=())  # each module adds its own
        # no SIDECAR_EGRESS_ALLOW: the edges run with the strict outbound rules (a module
        # that calls a loopback peer lists it in its own stack)
        audit_port = free_port()
        running = EdgeStack(plain.data_dir, ports=plain.ports, web_ca=ca, web_cert=cert,
                            web_key=key, dicom_client_cert=client_cert,
                            dicom_client_key=client_key, audit_syslog_port=audit_port,
                            env={"SIDECAR_DICOM_TLS_CLIENT_CA": str(client_ca),
                                 "SIDECAR_EGRESS_ALLOW": "",
                                 "SIDECAR_AUDIT_SYSLOG": f"tls://127.0.0.1:{audit_port}",
                                 "SIDECAR_AUDIT_SYSLOG_CA": str(ca)})
        try:
            running.start("--tls-cert", str(cert), "--tls-key", str(key))
            yield running
        finally:
            running.stop()


EDGE = Shared("shared_edge_stack", _edge_up)
_is_security = under("tests/security/")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    EDGE.group(items, _is_security)


def pytest_collection_finish(session: pytest.Session) -> None:
    EDGE.collected(session)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    yield
    EDGE.after_test(item)


def pytest_sessionfinish(session: pytest.Session) -> None:
    EDGE.stop()


@pytest.fixture(scope="session")
def shared_edge_stack() -> EdgeStack:
    return EDGE.get()


@pytest.fixture(scope="module")
def edge_stack(shared_edge_stack: EdgeStack, request: pytest.FixtureRequest) -> EdgeStack:
    """The shared HTTPS stack as this module sees it: `north` and `south` are facilities of its
    own (named after the module, AE titles their upper-cased names)."""
    name = request.module.__name__.rsplit(".", 1)[-1]
    tag = "e" + name.removeprefix("test_").removesuffix("_up").replace("_", "")[:9]
    return site_on(shared_edge_stack, tag)
