"""API keys: per-user secrets for machines, shown once and stored as SHA-256 digests.

A key is "rbk_" + 43 random URL-safe characters (256 bits). Guessing one is hopeless, so a fast
hash is right for them (unlike passwords, which need a slow one): the users file keeps only the
digest, with an id, a name and the creation time, under the user's record:
    "keys": [{"id": "3f9c1a2b", "name": "ci", "created": "2026-01-31T12:00:00Z", "sha256": "..."}]
A user may hold two keys at once, so a key is rotated without downtime: create the second,
switch the clients, revoke the first. Removing the user removes their keys. The server re-reads
the users file when it changes, so a revocation applies at once, without a restart.

Callers send a key as `Authorization: Bearer rbk_...` or `X-API-Key: rbk_...`; the server looks
it up by its digest (`KeyIndex`), so the time a lookup takes says nothing about stored keys.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from pathlib import Path

from rbridge.gateway import users

PREFIX = "rbk_"
MAX_ACTIVE = 2


def new_key() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


def looks_like_key(value: str) -> bool:
    return value.startswith(PREFIX)


def create_key(path: Path, user: str, name: str | None = None) -> tuple[str, str]:
    """Add a key for `user`; returns (key_id, key). The key itself is not stored anywhere."""
    name = name or "default"
    if len(name) > 64 or not name.isprintable():
        raise ValueError("the key name must be at most 64 printable characters")
    with users.editing(path) as data:
        record = data["users"].get(user)
        if record is None:
            raise ValueError(f"no user {user} in {path} (add one with: rbridge user add {user})")
        active = record.setdefault("keys", [])
        if len(active) >= MAX_ACTIVE:
            ids = ", ".join(k["id"] for k in active)
            raise ValueError(f"user {user} already has {MAX_ACTIVE} active keys ({ids}); revoke one "
                             f"first: rbridge key revoke {user} KEY_ID")
        key = new_key()
        key_id = secrets.token_hex(4)
        while any(k["id"] == key_id for k in active):
            key_id = secrets.token_hex(4)
        active.append({"id": key_id, "name": name, "sha256": digest(key),
                       "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    return key_id, key


def revoke_key(path: Path, user: str, key_id: str) -> bool:
    with users.editing(path) as data:
        record = data["users"].get(user)
        if record is None:
            raise ValueError(f"no user {user} in {path}")
        kept = [k for k in record.get("keys", []) if k.get("id") != key_id]
        if len(kept) == len(record.get("keys", [])):
            return False
        record["keys"] = kept
    return True


def list_keys(path: Path, user: str | None = None) -> list[dict]:
    """[{"user", "id", "name", "created"}]: never the digest, let alone the key."""
    all_users = users.read_file(path)["users"]
    if user is not None and user not in all_users:
        raise ValueError(f"no user {user} in {path}")
    return [{"user": name, "id": k.get("id"), "name": k.get("name"), "created": k.get("created")}
            for name, record in sorted(all_users.items()) if user in (None, name)
            for k in record.get("keys", [])]
