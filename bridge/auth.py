"""Who is calling: HTTP Basic, or a bearer token from POST /login.

Access tokens are JWTs (PyJWT, HS256) with issuer, audience, subject, role, expiry and `fp`, a
fingerprint of the user's credential record: re-passwording or removing a user invalidates
every token they hold, on every replica that reads the same users file. The signing key comes
from --signing-key-file or RBRIDGE_SIGNING_KEY (the same Secret on every replica); the file may
hold several keys, one per line, the first signing and the others still accepted (rotation),
each token naming its key by `kid`. Without a key a random one is made at start.

HTTP Basic would cost one slow argon2 hash per request (a few dozen requests/s at most), so a
successful check is cached for a short time, keyed by an HMAC of the credentials under a random
per-process key (the cache never holds a password), and emptied when the users file changes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
import threading
import time

import jwt

from .errors import ConfigError, Forbidden, Unauthorized
from .users import User, UserStore

log = logging.getLogger("bridge.auth")

ISSUER = AUDIENCE = "rbridge"
BASIC_CACHE_SECONDS = 60.0
BASIC_CACHE_MAX = 10_000


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


def _kid(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:8]


class Authenticator:
    def __init__(self, store: UserStore, keys: list[bytes], token_ttl: int):
        self.store, self.token_ttl = store, token_ttl
        self.keys = {_kid(k): k for k in keys}
        self.signing_kid = _kid(keys[0])
        self._cache_key = secrets.token_bytes(32)
        self._cache: dict[bytes, tuple[float, int, User]] = {}
        self._lock = threading.Lock()

    # -- tokens ----------------------------------------------------------------------------
    def issue(self, user: User) -> dict:
        now = int(time.time())
        claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": user.name, "role": user.role,
                  "fp": user.fingerprint, "iat": now, "exp": now + self.token_ttl,
                  "jti": secrets.token_urlsafe(12)}
        token = jwt.encode(claims, self.keys[self.signing_kid], algorithm="HS256",
                           headers={"kid": self.signing_kid})
        return {"access_token": token, "token_type": "Bearer", "expires_in": self.token_ttl}

    def verify_token(self, token: str) -> User:
        try:
            kid = jwt.get_unverified_header(token).get("kid")
            key = self.keys.get(kid)
            if key is None:
                raise jwt.InvalidTokenError("unknown key")
            claims = jwt.decode(token, key, algorithms=["HS256"], audience=AUDIENCE, issuer=ISSUER,
                                options={"require": ["exp", "sub", "iss", "aud"]})
        except jwt.ExpiredSignatureError:
            raise Unauthorized("the token has expired; sign in again at POST /login",
                               code="token_expired") from None
        except jwt.InvalidTokenError:
            raise Unauthorized("the token is not valid; sign in again at POST /login",
                               code="invalid_token") from None
        self.store.refresh()
        user = self.store.get(claims["sub"])
        if user is None or user.fingerprint != claims.get("fp"):
            raise Unauthorized("the token was revoked (the user was removed or changed password); "
                               "sign in again", code="token_revoked")
        return user

    # -- passwords -------------------------------------------------------------------------
    def login(self, username: str, password: str) -> User:
        self.store.refresh()
        user = self.store.verify_password(username, password)
        if user is None:
            log.warning("failed sign-in", extra={"fields": {"event": "auth_failed", "user": username[:64]}})
            raise Unauthorized("wrong username or password", code="bad_credentials")
        return user

    def basic(self, username: str, password: str) -> User:
        """HTTP Basic with a short-lived cache of successful checks."""
        self.store.refresh()
        key = hmac.new(self._cache_key, f"{username}\0{password}".encode(), hashlib.sha256).digest()
        hit = self._cache.get(key)
        now = time.monotonic()
        if hit and hit[0] > now and hit[1] == self.store.generation:
            return hit[2]
        user = self.login(username, password)
        with self._lock:
            if len(self._cache) >= BASIC_CACHE_MAX:
                self._cache.clear()
            self._cache[key] = (now + BASIC_CACHE_SECONDS, self.store.generation, user)
        return user

    # -- requests --------------------------------------------------------------------------
    def authenticate(self, authorization: str | None) -> User:
        """The user behind an Authorization header, or Unauthorized."""
        if not authorization:
            raise Unauthorized()
        scheme, _, value = authorization.partition(" ")
        scheme = scheme.lower()
        if scheme == "bearer" and value:
            return self.verify_token(value.strip())
        if scheme == "basic" and value:
            try:
                decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
            except (ValueError, UnicodeDecodeError):
                raise Unauthorized("malformed HTTP Basic credentials", code="bad_credentials") from None
            username, sep, password = decoded.partition(":")
            if not sep:
                raise Unauthorized("malformed HTTP Basic credentials", code="bad_credentials")
            return self.basic(username, password)
        raise Unauthorized("unsupported Authorization scheme: use Basic or Bearer")


def require_role(user: User, role: str) -> None:
    if role == "admin" and user.role != "admin":
        raise Forbidden(f"user '{user.name}' has role '{user.role}'; this needs an admin")
