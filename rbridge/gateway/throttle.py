"""Brute-force throttling of password attempts, and who the client is.

A password guess costs the bridge one argon2 hash and the attacker nothing, so failed sign-ins
(POST /login and HTTP Basic) are counted twice: per user name, so one account cannot be guessed
from many addresses, and per client address, so one address cannot try many accounts. Past the
limit (by default 5 failures a minute for a user, 20 for an address) the key is locked and every
password attempt on it is answered 429 with Retry-After, before any hash is computed, even
when the password is right (otherwise the lockout would tell a guesser which guess was right).
An attempt counts from the moment it starts: while attempts under way could reach the limit if
they all failed, a further one is refused (429, Retry-After: 1), so guesses sent all at once get
no more hashes than guesses sent one by one.
Each further lockout of the same key lasts twice as long (1 min, 2, 4, ... at most 15 min);
a user's count is cleared when they sign in. Tokens and API keys are not throttled: they cannot
be guessed, and a user locked out by someone guessing their password keeps working with them.

State is in memory, per replica, bounded in size; all methods are thread-safe.

The client address is the TCP peer, unless the peer is one of --trusted-proxies: then it is the
right-most address of X-Forwarded-For that is not itself a trusted proxy (the left-most entries
are whatever the client chose to send). Without this, throttling behind an ingress would count
every client as the ingress and lock everyone out at once.
"""

from __future__ import annotations

import ipaddress
import math
import threading
import time
from collections import OrderedDict

from rbridge.errors import Overloaded


class TooManyAttempts(Overloaded):
    code = "too_many_attempts"

    def __init__(self, retry_after: float, what: str = "too many failed sign-in attempts"):
        seconds = max(1, math.ceil(retry_after))
        super().__init__(f"{what}; try again in {seconds} s",
                         headers={"Retry-After": str(seconds)}, details={"retry_after": seconds})


class _Entry:
    __slots__ = ("failures", "locked_until", "strikes", "last", "pending")

    def __init__(self):
        self.failures: list[float] = []
        self.locked_until = 0.0
        self.strikes = 0
        self.last = 0.0
        self.pending = 0          # attempts started and not finished (their hash is running)


class Throttle:
    """Failure counts per key ("user:<name>", "addr:<ip>") with exponential lockouts."""

    def __init__(self, per_user: int = 5, per_address: int = 20, window: float = 60.0,
                 lockout: float = 60.0, max_lockout: float = 900.0, forget_after: float = 3600.0,
                 max_entries: int = 100_000, clock=time.monotonic):
        self.limits = {"user": per_user, "addr": per_address}
        self.window, self.lockout, self.max_lockout = window, lockout, max_lockout
        self.forget_after, self.max_entries, self.clock = forget_after, max_entries, clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def keys(user: str | None, address: str | None) -> list[str]:
        return ([f"user:{user}"] if user is not None else []) + ([f"addr:{address}"] if address else [])

    def check(self, keys: list[str]) -> None:
        """Raise TooManyAttempts when any of the keys is locked."""
        now = self.clock()
        with self._lock:
            wait = max((e.locked_until - now for k in keys if (e := self._entries.get(k))), default=0.0)
        if wait > 0:
            raise TooManyAttempts(wait)

    def start(self, keys: list[str]) -> None:
        """An attempt begins: refused (TooManyAttempts) when a key is locked, or when the attempts
        already under way could lock it if they all failed; else it counts as under way until
        `finish`. Counting at the start is what stops 60 guesses sent at once from all being
        checked before the first failure is known."""
        now = self.clock()
        with self._lock:
            entries = [self._entry(key, now) for key in keys]
            wait = max((e.locked_until - now for e in entries), default=0.0)
            if wait > 0:
                raise TooManyAttempts(wait)
            for key, e in zip(keys, entries):
                recent = sum(1 for t in e.failures if now - t < self.window)
                if e.pending and recent + e.pending >= self.limits[key.split(":", 1)[0]]:
                    raise TooManyAttempts(1, "too many sign-in attempts at once")
            for e in entries:
                e.pending += 1

    def finish(self, keys: list[str], failed: bool) -> list[tuple[str, float]]:
        """The attempt `start` admitted ended; a failure counts (returns the lockouts it began).
        Not failed covers both a success and a failure of the server's own (not the client's)."""
        with self._lock:
            for key in keys:
                entry = self._entries.get(key)
                if entry is not None and entry.pending:
                    entry.pending -= 1
        return self.failure(keys) if failed else []

    def _entry(self, key: str, now: float) -> _Entry:
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Entry()
            self._trim()
        else:
            self._entries.move_to_end(key)
        entry.last = now
        return entry

    def failure(self, keys: list[str]) -> list[tuple[str, float]]:
        """Count a failure; returns the (key, seconds) lockouts it started."""
        now = self.clock()
        started = []
        with self._lock:
            for key in keys:
                entry = self._entry(key, now)
                if now - entry.locked_until > self.forget_after:
                    entry.strikes = 0
                entry.failures = [t for t in entry.failures if now - t < self.window]
                entry.failures.append(now)
                if len(entry.failures) >= self.limits[key.split(":", 1)[0]]:
                    seconds = min(self.lockout * 2 ** entry.strikes, self.max_lockout)
                    entry.locked_until, entry.failures = now + seconds, []
                    entry.strikes += 1
                    started.append((key, seconds))
        return started

    def success(self, user: str) -> None:
        """The user signed in: forget their failures (their address's count stays)."""
        with self._lock:
            self._entries.pop(f"user:{user}", None)

    def _trim(self) -> None:
        """Bound memory: drop the keys whose last failure is oldest (most recent last)."""
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


def parse_networks(specs) -> tuple:
    return tuple(ipaddress.ip_network(s, strict=False) for s in specs)


def _address(text: str):
    try:
        addr = ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None
    return addr.ipv4_mapped or addr if addr.version == 6 else addr


def client_address(peer: str | None, forwarded_for: str | None, trusted: tuple) -> str:
    """The client's address: the peer, or from X-Forwarded-For when the peer is a trusted proxy."""
    peer = peer or ""
    if not trusted or not forwarded_for:
        return peer
    addr = _address(peer)
    if addr is None or not any(addr in net for net in trusted):
        return peer
    for hop in reversed(forwarded_for.split(",")):
        addr = _address(hop)
        if addr is None:            # garbage in the chain: stop at the last hop we trust
            break
        peer = str(addr)
        if not any(addr in net for net in trusted):
            break
    return peer
