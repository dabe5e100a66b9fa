"""Slow and idle clients against the granian front (issue 12 item 6), with real sockets.

The attacker speaks from 127.0.0.1; a well-behaved client from 127.0.0.2 must get /healthz and a
predict answered within a few seconds during each attack. 127.0.0.3 stands for an ingress
(--trusted-proxies): it is not capped. Seen failing before ClientGuard: 100 requests sending
their body a byte a second held every HTTP thread, and /healthz from 127.0.0.2 timed out.
A body is not timed out (granian's WSGI gives no way to give up on a read; docs/security.md).
Connections beyond --max-connections-per-client (CONNS) from one address are closed, the idle
ones first (conncap.py); seen failing before its sweeper ran: none of 300 idle connections was
closed in 10 s.
"""

from __future__ import annotations

import base64
import re
import socket
import threading
import time

import pytest
import requests
from requests.adapters import HTTPAdapter

from serverproc import ADMIN, Server
from rbridge.server.front_granian import HEADER_TIMEOUT_MS

pytestmark = [pytest.mark.r, pytest.mark.slow]
CAP = 8
CONNS = 50                # --max-connections-per-client
MODEL = "cars"
ROW = {"wt": 2.5, "hp": 110, "cyl": "6"}
BASIC = base64.b64encode(f"{ADMIN[0]}:{ADMIN[1]}".encode()).decode()


class _From(HTTPAdapter):
    def __init__(self, address: str):
        self.address = address
        super().__init__()

    def init_poolmanager(self, *args, **kwargs):
        kwargs["source_address"] = (self.address, 0)
        super().init_poolmanager(*args, **kwargs)


@pytest.fixture(scope="module")
def server(small_models, tmp_path_factory):
    with Server(small_models, tmp_path_factory.mktemp("slow-clients"), "--workers", "1",
                "--max-inflight-per-client", str(CAP), "--max-connections-per-client", str(CONNS),
                "--trusted-proxies", "127.0.0.3") as s:
        yield s


def served(s: Server, address: str = "127.0.0.2") -> list:
    """/healthz and a predict from `address`: each one's status, or the exception's name."""
    session = requests.Session()
    session.mount("http://", _From(address))
    out = []
    for call in (lambda: session.get(s.url + "/healthz", timeout=5),
                 lambda: session.post(s.url + "/models/" + MODEL + "/predict", json={"data": [ROW]}, auth=ADMIN, timeout=5)):
        try:
            out.append(call().status_code)
        except requests.RequestException as exc:
            out.append(type(exc).__name__)
    return out


def connect(s: Server, address: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket()
    sock.bind((address, 0))
    sock.connect(("127.0.0.1", s.port))
    return sock


def slow_body(s: Server, address: str = "127.0.0.1", length: int = 1000) -> socket.socket:
    """Headers of an authenticated predict (the connection to close after it), then one byte of its body."""
    sock = connect(s, address)
    sock.sendall(f"POST /models/{MODEL}/predict HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {BASIC}\r\n"
                 "Connection: close\r\n"
                 f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n{{".encode())
    return sock


def closed_by_server(sock: socket.socket) -> bool:
    """Whether the server has closed `sock` (end of file or reset), without waiting."""
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


def trickle(socks: list, data: bytes, every: float, stop: threading.Event) -> threading.Thread:
    def run():
        while not stop.wait(every):
            for sock in socks:
                try:
                    sock.send(data)
                except OSError:
                    pass
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def answer(sock: socket.socket, timeout: float) -> bytes:
    """What the server sent before closing (or until `timeout`)."""
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except OSError:
        pass
    return data


def test_a_thousand_idle_connections_from_one_address_leave_others_served(server):
    socks = []
    try:
        for _ in range(1000):
            socks.append(connect(server))
        t0 = time.monotonic()
        assert served(server) == [200, 200]
        assert time.monotonic() - t0 < 5
    finally:
        for sock in socks:
            sock.close()


def test_headers_sent_a_line_every_second_are_cut_off_at_the_header_timeout(server):
    stop = threading.Event()
    socks = [connect(server) for _ in range(100)]
    for sock in socks:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    trickle(socks, b"X-Slow: 1\r\n", 1.0, stop)
    try:
        time.sleep(1)
        assert served(server) == [200, 200]
        deadline = time.monotonic() + HEADER_TIMEOUT_MS / 1000 + 5
        for sock in socks:   # each is closed by the server, without an answer
            assert b"HTTP/1.1 200" not in answer(sock, max(0.1, deadline - time.monotonic()))
        assert time.monotonic() < deadline
    finally:
        stop.set()
        for sock in socks:
            sock.close()


def test_slow_bodies_are_capped_per_address(server):
    stop = threading.Event()
    socks = [slow_body(server) for _ in range(100)]
    trickle(socks, b" ", 1.0, stop)
    try:
        t0 = time.monotonic()
        answers = [answer(sock, 0.5) for sock in socks]   # the refused are answered at once
        heads = [a.split(b"\r\n", 1)[0] for a in answers]
        assert heads.count(b"HTTP/1.1 429 Too Many Requests") == 100 - CAP, heads
        assert heads.count(b"") == CAP                     # still sending their bodies
        assert all(b'"too_many_requests_from_client"' in a and b"retry-after: 1" in a.lower()
                   for a in answers if a)
        assert time.monotonic() - t0 < 100 * 0.5
        for _ in range(3):                                  # while the CAP requests hold on
            assert served(server) == [200, 200]
            time.sleep(1)
        assert served(server, "127.0.0.1") == [429, 429]
    finally:
        stop.set()
        for sock in socks:
            sock.close()
    deadline = time.monotonic() + 10        # the held requests end with their connections
    while served(server, "127.0.0.1") != [200, 200] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert served(server, "127.0.0.1") == [200, 200]


def test_a_trusted_proxy_is_not_capped(server):
    stop = threading.Event()
    socks = [slow_body(server, "127.0.0.3") for _ in range(CAP + 4)]
    trickle(socks, b" ", 1.0, stop)
    try:
        assert [answer(sock, 0.3) for sock in socks] == [b""] * (CAP + 4)   # none refused
        assert served(server, "127.0.0.3") == [200, 200]
    finally:
        stop.set()
        for sock in socks:
            sock.close()


def test_connections_over_the_cap_from_one_address_are_closed_the_idle_first(server):
    socks = [connect(server) for _ in range(300)]
    busy = connect(server)    # the same address, asking every few tenths of a second: never closed
    busy.settimeout(2)
    try:
        t0, closed = time.monotonic(), 0
        while closed < 300 + 1 - CONNS and time.monotonic() - t0 < 10:
            t1 = time.monotonic()
            assert served(server) == [200, 200]
            busy.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert busy.recv(65536).startswith(b"HTTP/1.1 200")
            assert time.monotonic() - t1 < 2
            time.sleep(0.2)
            closed = sum(closed_by_server(sock) for sock in socks)
        assert closed == 300 + 1 - CONNS, closed        # the excess, and not one more
        assert time.monotonic() - t0 < 5
        assert "over --max-connections-per-client 50" in server.log_text()
        [total] = re.findall(r"^rbridge_client_connections_closed_total (\S+)$", server.get("/metrics").text, re.M)
        assert float(total) >= 300 + 1 - CONNS           # earlier tests' closings count too
    finally:
        for sock in socks + [busy]:
            sock.close()
    assert served(server, "127.0.0.1") == [200, 200]   # the address is served again


def test_connections_from_a_trusted_proxy_are_not_closed(server):
    socks = [connect(server, "127.0.0.3") for _ in range(CONNS + 50)]
    try:
        time.sleep(3)
        assert sum(closed_by_server(sock) for sock in socks) == 0
        assert served(server, "127.0.0.3") == [200, 200]
    finally:
        for sock in socks:
            sock.close()
