"""A RIS as the tests play it: an ORU^R01 final report and one MLLP exchange on a plain socket
(the README's message: accession in OBR-3, the RIS's facility in MSH-4)."""

from __future__ import annotations

import socket


def oru(control_id: str, accession: str, sender: str, note: str = "") -> bytes:
    """An ORU^R01 final report from the RIS `sender` (MSH-4) for `accession`, with an OBX
    impression when `note` is given."""
    segments = [
        f"MSH|^~\\&|RIS|{sender}|SIDECAR|SIDECAR|20240305113005||ORU^R01^ORU_R01|{control_id}"
        "|P|2.5.1",
        "PID|1||MRN-1^^^HOSP^MR||Doe^Jane",
        f"OBR|1||{accession}^RIS|71250^CT CHEST|||20240305101500|||||||||||||"
        f"RPT-{accession}||20240305113000|||F",
    ]
    if note:
        segments.append(f"OBX|1|TX|IMP^Impression||{note}||||||F")
    return ("\r".join(segments) + "\r").encode()


def exchange(conn: socket.socket, message: bytes) -> str:
    """Sends one MLLP-framed message on an open connection (plain or TLS) and returns the ACK's
    text (unframed)."""
    conn.sendall(b"\x0b" + message + b"\x1c\x0d")
    data = b""
    while not data.endswith(b"\x1c\x0d"):
        chunk = conn.recv(4096)
        assert chunk, "connection closed before the ACK"
        data += chunk
    return data[1:-2].decode()


def mllp(port: int, message: bytes, host: str = "127.0.0.1") -> str:
    """Sends one MLLP-framed message on a new connection and returns the ACK's text."""
    with socket.create_connection((host, port), timeout=30) as conn:
        return exchange(conn, message)
