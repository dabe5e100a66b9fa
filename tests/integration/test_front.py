"""The HTTP front that ships (granian, the default): what it must hold for every request.

Each test starts a real server (real R, real sockets) on 127.0.0.1 and checks one property of
the front from outside: the banner, secrets kept out of request handlers' environment, a
drain under keep-alive load, requests with both Content-Length and Transfer-Encoding, and idle
connections that must not starve the probes.
"""

from __future__ import annotations

import base64
import concurrent.futures as cf
import signal
import socket
import threading
import time

import psutil
import pytest
import requests

from serverproc import ADMIN, Server

pytestmark = [pytest.mark.r, pytest.mark.slow]
SECRET = "a-signing-key-that-must-not-reach-request-handlers-0123456789"


def _r_workers(s: Server) -> list[psutil.Process]:
    return [p for p in psutil.Process(s.proc.pid).children(recursive=True)
            if "rbridge.worker" in " ".join(p.cmdline())]


def test_default_front_is_granian_with_our_banner_and_no_secrets_in_the_environment(small_models, tmp_path):
    with Server(small_models, tmp_path, "--workers", "1", env={"RBRIDGE_SIGNING_KEY": SECRET}) as s:
        r = requests.get(s.url + "/healthz", timeout=10)
        assert r.headers["Server"] == "rbridge"
        main = psutil.Process(s.proc.pid)
        gateways = main.children()
        assert len(gateways) == 1, "one gateway process under granian's supervisor"
        assert any("rbridge.worker" in " ".join(p.cmdline()) for p in gateways[0].children())
        # R workers are started by the gateway after it scrubbed its environment, as granian
        # copies the gateway's environment into every request's environ from then on.
        for worker in _r_workers(s):
            env = worker.environ()
            assert "RBRIDGE_SIGNING_KEY" not in env and SECRET not in " ".join(env.values())
        token = s.post("/login", {"username": ADMIN[0], "password": ADMIN[1]}, auth=None).json()["access_token"]
        assert requests.get(s.url + "/models", headers={"Authorization": f"Bearer {token}"},
                            timeout=10).status_code == 200           # the key is still the one in use
    assert SECRET not in s.log_text()


def test_sigterm_under_keep_alive_load_resets_no_accepted_request(small_models, tmp_path):
    s = Server(small_models, tmp_path, "--workers", "2", "--graceful-timeout", "10")
    stop, results, closes = threading.Event(), [], []

    def client():
        session = requests.Session()
        while not stop.is_set():
            try:
                r = session.post(s.url + "/models/chaos/predict", auth=ADMIN, timeout=30,
                                 json={"data": [{"mode": "sleep", "x": 0.2}]})
                results.append(r.status_code)
                closes.append(r.headers.get("Connection", "").lower() == "close")
            except requests.ConnectionError as exc:
                # refused once the listener closed: fine; anything else reset an accepted request
                results.append("refused" if "refused" in str(exc).lower() else f"reset: {exc}")
                if "refused" in str(exc).lower():
                    return
    try:
        with cf.ThreadPoolExecutor(8) as ex:
            futures = [ex.submit(client) for _ in range(8)]
            time.sleep(2)
            s.proc.send_signal(signal.SIGTERM)
            sent = time.monotonic()
            code = s.proc.wait(20)
            took = time.monotonic() - sent
            stop.set()
            for f in futures:
                f.result(30)
    finally:
        s.stop()
    assert code == 0
    assert took < 10, f"exit took {took:.1f} s with --graceful-timeout 10"
    bad = [r for r in results if r not in (200, "refused")]
    assert not bad, bad
    assert results.count(200) >= 8 and any(closes), "responses during the drain say Connection: close"


def test_content_length_with_transfer_encoding_is_answered_once_and_closed(server):
    body = b'{"data": [{"wt": 2.5, "hp": 110, "cyl": "6"}]}'
    smuggled = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    request = (b"POST /models/cars/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Authorization: Basic " + base64.b64encode(f"{ADMIN[0]}:{ADMIN[1]}".encode()) + b"\r\n"
               b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
               + b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n" + smuggled)
    with socket.create_connection(("127.0.0.1", server.port), timeout=20) as sock:
        sock.sendall(request)
        data = b""
        while True:                                  # the server must close: recv returns b""
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    assert data.count(b"HTTP/1.1 ") == 1, data[:2000]   # nothing after it was read as a second request


def test_idle_connections_do_not_starve_the_probes(server):
    conns = []
    try:
        for _ in range(1000):
            conns.append(socket.create_connection(("127.0.0.1", server.port), timeout=5))
        t0 = time.monotonic()
        assert requests.get(server.url + "/healthz", timeout=5).status_code == 200
        assert server.predict("cars", [{"wt": 2.5, "hp": 110, "cyl": "6"}]).status_code == 200
        assert time.monotonic() - t0 < 5
    finally:
        for c in conns:
            c.close()
