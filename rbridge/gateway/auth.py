"""Who is calling: HTTP Basic, a bearer token from POST /login, or an API key.

Tokens are JWTs (PyJWT, HS256) with issuer, audience, subject, role, expiry, `jti` and `fp`, a
fingerprint of the user's credential record: re-passwording or removing a user invalidates every
token they hold, on every replica that reads the same users file. POST /login gives a short-lived
access token (--token-ttl) and a refresh token (--refresh-token-ttl, another audience, so neither
passes for the other). POST /login/refresh exchanges a refresh token for a new pair and revokes
the old one; presenting a used refresh token again revokes every token descended from the same
sign-in (its family, `fam`), since one of its two holders is a thief. POST /logout revokes one.
Revocations are kept in memory by the replica that got them (`Revocations`): a refreshed or
logged-out token still works on other replicas until it expires, while removing or
re-passwording a user works everywhere.

The signing key comes from --signing-key-file or RBRIDGE_SIGNING_KEY (the same Secret on every
replica); the file may hold several keys, one per line, the first signing and the others still
accepted (rotation), each token naming its key by `kid`. Without a key a random one is made at
start.

Passwords (POST /login, HTTP Basic) are checked against argon2 hashes, at most a few at once (each
takes ~64 MiB and a core for a fraction of a second), after the brute-force throttle
(throttle.py) has had its say. HTTP Basic would cost one hash per request, so a successful check
is cached for a short time, keyed by an HMAC of the credentials under a random per-process key
(the cache never holds a password), and emptied when the users file changes.

API keys (keys.py) arrive as `Authorization: Bearer rbk_...` or `X-API-Key`.

Secrets never reach a log line: callers log user names and key ids only, and
`install_log_redaction` scrubs anything that looks like a credential from every line as well.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import threading
import time

import jwt

from rbridge.errors import ConfigError, Forbidden, Unauthorized
from rbridge.gateway.keys import looks_like_key
from rbridge.gateway.throttle import Throttle
from rbridge.gateway.users import ROLES, User, UserStore

log = logging.getLogger("bridge.auth")

ISSUER = AUDIENCE = "rbridge"
REFRESH_AUDIENCE = "rbridge/refresh"
LEEWAY = 5                      # seconds of clock skew between replicas
BASIC_CACHE_SECONDS = 60.0
BASIC_CACHE_MAX = 10_000
TOKEN_CACHE_MAX = 10_000
HASH_SLOTS = max(2, len(os.sched_getaffinity(0)))


def load_signing_keys(settings) -> tuple[list[bytes], bool]:
    """(keys, persistent): the first key signs; all verify."""
    if settings.signing_key:
        texts = [settings.signing_key]
    elif settings.signing_key_file:
        try:
            texts = settings.signing_key_file.read_text().split()
        except OSError as exc:
            raise ConfigError(f"cannot read the signing key file {settings.signing_key_file}: "
                              f"{exc.strerror}") from None
    else:
        return [secrets.token_bytes(32)], False
    keys = [t.encode() for t in texts if t.strip()]
    if not keys or any(len(k) < 32 for k in keys):
        raise ConfigError("signing keys must be at least 32 characters each "
                          "(make one with: python -c 'import secrets; print(secrets.token_urlsafe(48))')")
    return keys, True


def _unverified_kid(token: str) -> str | None:
    """The `kid` of a token's header, read without checking anything (jwt.decode does that)."""
    head = token.split(".", 1)[0]
    try:
        header = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    except (ValueError, RecursionError):    # RecursionError: a header nested thousands deep
        return None
    kid = header.get("kid") if isinstance(header, dict) else None
    return kid if isinstance(kid, str) else None


def _family(claims: dict) -> str | None:
    """The revocation id of the sign-in a token descends from (tokens of one /login share it)."""
    family = claims.get("fam")
    return f"fam:{family}" if isinstance(family, str) else None


def key_id(key: bytes) -> str:
    """The `kid` of a signing key: names it without revealing it."""
    return hashlib.sha256(key).hexdigest()[:8]



class Revocations:
    """Token ids revoked on this replica, each kept until the token would have expired anyway."""

    def __init__(self):
        self._until: dict[str, float] = {}
        self._lock = threading.Lock()
        self._next_prune = 0.0

    def add(self, jti: str, exp: float) -> bool:
        """Revoke; False when it was revoked already (a refresh token used twice)."""
        now = time.time()
        with self._lock:
            if now >= self._next_prune:
                self._until = {j: t for j, t in self._until.items() if t + LEEWAY > now}
                self._next_prune = now + 60
            if jti in self._until:
                return False
            self._until[jti] = float(exp)
            return True

    def __contains__(self, jti) -> bool:
        return jti in self._until

    def __len__(self) -> int:
        return len(self._until)


class Authenticator:
    def __init__(self, store: UserStore, keys: list[bytes], token_ttl: int, refresh_ttl: int = 86400,
                 throttle: Throttle | None = None):
        self.store, self.token_ttl, self.refresh_ttl = store, token_ttl, refresh_ttl
        self.keys = {key_id(k): k for k in keys}
        self.signing_kid = key_id(keys[0])
        self.throttle = throttle or Throttle()
        self.revoked = Revocations()
        self._hash_slots = threading.BoundedSemaphore(HASH_SLOTS)
        self._cache_key = secrets.token_bytes(32)
        self._cache: dict[bytes, tuple[float, int, User]] = {}
        self._flights: dict[bytes, threading.Event] = {}
        self._verified: dict[bytes, dict] = {}
        self._lock = threading.Lock()

    # -- tokens ----------------------------------------------------------------------------
    def _sign(self, user: User, audience: str, ttl: int, now: int, family: str) -> str:
        claims = {"iss": ISSUER, "aud": audience, "sub": user.name, "role": user.role,
                  "fp": user.fingerprint, "iat": now, "exp": now + ttl, "jti": secrets.token_urlsafe(16),
                  "fam": family}
        return jwt.encode(claims, self.keys[self.signing_kid], algorithm="HS256",
                          headers={"kid": self.signing_kid})

    def issue(self, user: User, family: str | None = None) -> dict:
        """The body of POST /login (a new family) and POST /login/refresh (the same family)."""
        check_role(user)
        now = int(time.time())
        family = family or secrets.token_urlsafe(12)
        return {"access_token": self._sign(user, AUDIENCE, self.token_ttl, now, family),
                "token_type": "Bearer", "expires_in": self.token_ttl,
                "refresh_token": self._sign(user, REFRESH_AUDIENCE, self.refresh_ttl, now, family),
                "refresh_expires_in": self.refresh_ttl}

    def _decode(self, token: str, audience: str, verify_exp: bool = True) -> dict:
        what = "refresh token" if audience == REFRESH_AUDIENCE else "token"
        try:
            key = self.keys.get(_unverified_kid(token))
            if key is None:
                raise jwt.InvalidTokenError("unknown key")
            return jwt.decode(token, key, algorithms=["HS256"], audience=audience, issuer=ISSUER,
                              leeway=LEEWAY, options={"require": ["exp", "iat", "sub", "iss", "aud", "jti"],
                                                      "verify_exp": verify_exp})
        except jwt.ExpiredSignatureError:
            raise Unauthorized(f"the {what} has expired; sign in again at POST /login",
                               code="token_expired") from None
        except (jwt.InvalidTokenError, RecursionError):
            raise Unauthorized(f"the {what} is not valid; sign in again at POST /login",
                               code="invalid_token") from None

    def _holder(self, claims: dict) -> User:
        """The user a token was issued to, if their credentials did not change since."""
        self.store.refresh()
        user = self.store.get(claims["sub"])
        if user is None or user.fingerprint != claims.get("fp"):
            raise Unauthorized("the token was revoked (the user was removed or changed password); "
                               "sign in again", code="token_revoked")
        return user

    def verify_token(self, token: str) -> User:
        """An access token's user. Checked signatures are remembered (by HMAC, like Basic), so a
        token's next request costs a dict lookup; expiry, revocation and fingerprint are checked
        every time."""
        digest = hmac.new(self._cache_key, token.encode("utf-8", "surrogateescape"), hashlib.sha256).digest()
        claims = self._verified.get(digest)
        if claims is None or claims["exp"] + LEEWAY <= time.time():
            claims = self._decode(token, AUDIENCE)
            with self._lock:
                if len(self._verified) >= TOKEN_CACHE_MAX:
                    self._verified.clear()
                self._verified[digest] = claims
        if claims["jti"] in self.revoked or _family(claims) in self.revoked:
            raise Unauthorized("the token was revoked (logged out, or its sign-in's refresh token was "
                               "used twice); sign in again", code="token_revoked")
        return self._holder(claims)

    def refresh(self, refresh_token: str) -> dict:
        """A new pair for a refresh token, which stops working (rotation)."""
        claims = self._decode(refresh_token, REFRESH_AUDIENCE)
        user = self._holder(claims)
        family = _family(claims)
        if family in self.revoked or not self.revoked.add(claims["jti"], claims["exp"]):
            # Used twice: the thief or the owner holds the newer pair, and which is unknowable, so
            # every token of that sign-in stops working (until the newest could have expired).
            if family:
                self.revoked.add(family, time.time() + self.refresh_ttl)
            log.warning("a used or revoked refresh token was presented; its sign-in is revoked",
                        extra={"fields": {"event": "refresh_reused", "user": user.name}})
            raise Unauthorized("the refresh token was already used or revoked; sign in again",
                               code="token_revoked")
        return self.issue(user, claims.get("fam"))

    def logout(self, refresh_token: str, access_token: str | None = None) -> str:
        """Revoke a refresh token (and the access token sent with it) on this replica."""
        claims = self._decode(refresh_token, REFRESH_AUDIENCE, verify_exp=False)
        self.revoked.add(claims["jti"], claims["exp"])
        if access_token and not looks_like_key(access_token):
            try:
                access = self._decode(access_token, AUDIENCE, verify_exp=False)
                self.revoked.add(access["jti"], access["exp"])
            except Unauthorized:
                pass
        log.info("signed out", extra={"fields": {"event": "logout", "user": claims["sub"]}})
        return claims["sub"]

    # -- passwords -------------------------------------------------------------------------
    def login(self, username: str, password: str, client: str = "", method: str = "login") -> User:
        """Check a password under the throttle; the same error and cost for unknown users."""
        self.store.refresh()
        attempt = self.throttle.keys(username if len(username) <= 64 else "(too long)", client)
        self.throttle.start(attempt)
        try:
            with self._hash_slots:
                user = self.store.verify_password(username, password)
        except BaseException:   # an error of the server's own, not a wrong password: counts against nobody
            self.throttle.finish(attempt, failed=False)
            raise
        lockouts = self.throttle.finish(attempt, failed=user is None)
        if user is None:
            known = self.store.get(username) is not None
            fields = {"event": "auth_failed", "method": method, "client": client,
                      "user": username if known else None, "known_user": known}
            log.warning("failed sign-in", extra={"fields": fields})
            for key, seconds in lockouts:
                log.warning("too many failed sign-ins: %s locked for %g s", key.split(":")[0], seconds,
                            extra={"fields": {**fields, "event": "auth_locked", "locked_seconds": seconds}})
            raise Unauthorized("wrong username or password", code="bad_credentials")
        self.throttle.success(user.name)
        return user

    def basic(self, username: str, password: str, client: str = "") -> User:
        """HTTP Basic with a short-lived cache of successful checks."""
        self.store.refresh()
        # Lockouts apply to cached credentials too: otherwise, while a user is locked, the one
        # right guess would be answered 200 and every wrong one 429, at no cost to the guesser.
        self.throttle.check(self.throttle.keys(username if len(username) <= 64 else "(too long)", client))
        key = hmac.new(self._cache_key, f"{username}\0{password}".encode("utf-8", "surrogateescape"),
                       hashlib.sha256).digest()
        user = self._cached(key)
        if user is not None:
            return user
        # Single flight: when many connections arrive at once with the same credentials (a client
        # pool starting up), one of them runs the slow hash and the others wait for its answer
        # instead of each spending ~0.1 s of CPU and 64 MiB on the same check.
        with self._lock:
            flight = self._flights.get(key)
            leader = flight is None
            if leader:
                flight = self._flights[key] = threading.Event()
        if not leader:
            flight.wait(30)
            user = self._cached(key)
            if user is not None:
                return user
            return self.login(username, password, client, method="basic")   # the leader failed
        try:
            user = self.login(username, password, client, method="basic")
            with self._lock:
                if len(self._cache) >= BASIC_CACHE_MAX:
                    self._cache.clear()
                self._cache[key] = (time.monotonic() + BASIC_CACHE_SECONDS, self.store.generation, user)
            return user
        finally:
            with self._lock:
                del self._flights[key]
            flight.set()

    def _cached(self, key: bytes) -> User | None:
        hit = self._cache.get(key)
        if hit and hit[0] > time.monotonic() and hit[1] == self.store.generation:
            return hit[2]
        return None

    # -- API keys --------------------------------------------------------------------------
    def api_key(self, key: str, client: str = "") -> User:
        self.store.refresh()
        hit = self.store.by_key(key)
        if hit is None:
            log.warning("rejected an API key", extra={"fields": {"event": "auth_failed", "method": "api_key",
                                                                 "client": client}})
            raise Unauthorized("the API key is not valid (revoked or mistyped)", code="invalid_key")
        return hit[0]

    # -- requests --------------------------------------------------------------------------
    def authenticate(self, authorization: str | None, api_key: str | None = None, client: str = "") -> User:
        """The user behind an Authorization (or X-API-Key) header, or Unauthorized."""
        if not authorization:
            if api_key and api_key.strip():
                return self.api_key(api_key.strip(), client)
            raise Unauthorized()
        scheme, _, value = authorization.partition(" ")
        scheme, value = scheme.lower(), value.strip()
        if scheme == "bearer" and value:
            return self.api_key(value, client) if looks_like_key(value) else self.verify_token(value)
        if scheme == "basic" and value:
            try:
                decoded = base64.b64decode(value, validate=True).decode("utf-8")
            except (ValueError, UnicodeDecodeError):
                raise Unauthorized("malformed HTTP Basic credentials", code="bad_credentials") from None
            username, sep, password = decoded.partition(":")
            if not sep:
                raise Unauthorized("malformed HTTP Basic credentials", code="bad_credentials")
            return self.basic(username, password, client)
        raise Unauthorized("unsupported Authorization scheme: use Basic or Bearer")


def require_role(user: User, role: str) -> None:
    """Roles are ordered (users.ROLES: scorer < publisher < admin); an unknown role may do nothing."""
    check_role(user)
    if ROLES.index(user.role) < ROLES.index(role):
        raise Forbidden(f"user '{user.name}' has role '{user.role}'; this needs {'an' if role == 'admin' else 'a'} "
                        f"{role}" + (" or an admin" if role == "publisher" else ""))


def check_role(user: User) -> None:
    """A role the server does not define (a typo, "root") is refused, never taken for another."""
    if user.role not in ROLES:
        raise Forbidden(f"user '{user.name}' has role '{user.role}', which this server does not define "
                        f"(roles: {', '.join(ROLES)}); ask an operator to fix the users file",
                        code="unknown_role")


# -- log redaction ---------------------------------------------------------------------------
_SECRET_NAMES = r"password|passwd|secret|refresh_token|access_token|api[_-]?key|authorization|signing_key"
_REDACTIONS = [
    # name=value / "name": "value", also inside a JSON-escaped string
    (re.compile(r'(?i)((?:' + _SECRET_NAMES + r')\\?["\']?\s*[:=]\s*)'
                r'(\\?"(?:[^"\\]|\\[^"])*\\?"|\'[^\']*\'|(?:(?:basic|bearer)\s+)?[^\s"\'\\,;&}]+)'),
     r'\1"[redacted]"'),
    (re.compile(r"(?i)\b(basic|bearer)\s+[A-Za-z0-9+/=._~-]{8,}"), r"\1 [redacted]"),
    (re.compile(r"rbk_[A-Za-z0-9_-]{8,}"), "rbk_[redacted]"),
    (re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"), "[redacted-jwt]"),
]


def redact(text: str) -> str:
    """Scrub anything that looks like a credential (a safety net: nothing should log one)."""
    for pattern, replacement in _REDACTIONS:
        text = pattern.sub(replacement, text)
    return text


class RedactingFormatter:
    """Wraps a logging formatter; the formatted line, traceback included, is redacted."""

    def __init__(self, inner: logging.Formatter):
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        return redact(self.inner.format(record))

    def __getattr__(self, name):
        return getattr(self.inner, name)


def install_log_redaction(logger: logging.Logger | None = None) -> None:
    """Redact every line the handlers of `logger` (default: the root logger) write."""
    for front in (logger or logging.getLogger()).handlers:
        for handler in getattr(front, "targets", [front]):   # logs.setup_logging queues to targets
            if handler.formatter is not None and not isinstance(handler.formatter, RedactingFormatter):
                handler.setFormatter(RedactingFormatter(handler.formatter))
