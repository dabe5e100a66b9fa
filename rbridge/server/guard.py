"""A cap on each client address's requests in flight, for the granian front (gateway process).

granian reads headers in Rust (a client that does not finish them in HEADER_TIMEOUT_MS is cut
off) and then calls the app on one of its HTTP threads, which blocks in `wsgi.input.read()`
until the body's bytes arrive: nothing in granian bounds that wait, and the app cannot give up
on it (see docs/security.md). A client that sent its headers and then a byte of body every few
seconds held an HTTP thread per request; with as many such requests as there are threads,
/healthz and every predict waited for minutes.

ClientGuard, the outermost layer of the app, counts each peer address's requests in flight (from
the call until the app returns: reading the body happens inside it) and
answers 429 (`Retry-After: 1`, `Connection: close`) to the one over `--max-inflight-per-client`,
at once, before anything reads its body. So one address holds at most that many HTTP threads,
and the others (probes among them) stay free. Peers in `--trusted-proxies` are not counted:
behind an ingress every client shares the ingress's address. What is counted is requests, not
connections: granian gives the app no hook when a connection is accepted, and a connection that
sends nothing costs a file descriptor and a Rust task, never a thread.
"""

from __future__ import annotations

import ipaddress
import threading

import orjson

from rbridge.errors import Overloaded
from rbridge.gateway.access import error_body

_EXEMPT_CACHE = 4096       # addresses whose exemption is remembered


class TrustedPeers:
    """Whether a peer address is in `--trusted-proxies` (networks allowed), remembered per address.
    Shared by ClientGuard and the connection cap (conncap.py), so both exempt the same peers."""

    def __init__(self, trusted: tuple):
        self.networks = tuple(ipaddress.ip_network(t, strict=False) for t in trusted)
        self._exempt: dict[str, bool] = {}

    def __contains__(self, address: str) -> bool:
        exempt = self._exempt.get(address)
        if exempt is None:
            try:
                ip = ipaddress.ip_address(address)
                exempt = any(ip in net for net in self.networks)
            except ValueError:
                exempt = False
            if len(self._exempt) < _EXEMPT_CACHE:
                self._exempt[address] = exempt
        return exempt


class ClientGuard:
    def __init__(self, app, max_inflight: int, trusted: tuple):
        self.app, self.max_inflight = app, max_inflight
        self.trusted = TrustedPeers(trusted)
        self._inflight: dict[str, int] = {}
        self._lock = threading.Lock()

    def __call__(self, environ, start_response):
        address = environ.get("REMOTE_ADDR") or ""
        if self.max_inflight <= 0 or address in self.trusted:
            return self.app(environ, start_response)
        with self._lock:
            n = self._inflight.get(address, 0)
            if n >= self.max_inflight:
                return self._refuse(environ, start_response)
            self._inflight[address] = n + 1
        try:
            return self.app(environ, start_response)
        finally:
            with self._lock:
                n = self._inflight[address] - 1
                if n:
                    self._inflight[address] = n
                else:
                    del self._inflight[address]

    def _refuse(self, environ, start_response):
        exc = Overloaded(f"too many requests in flight from {environ.get('REMOTE_ADDR')} "
                         f"(--max-inflight-per-client {self.max_inflight})", code="too_many_requests_from_client")
        payload = orjson.dumps(error_body(exc, environ.get("PATH_INFO", "")))
        start_response("429 Too Many Requests", [
            ("Content-Type", "application/json"), ("Content-Length", str(len(payload))),
            ("Retry-After", "1"), ("Connection", "close")])
        return [payload]
