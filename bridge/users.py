"""The users file: who may call the service, with which role, and their hashed credentials.

Format (JSON, mode 0600, written atomically):
    {"users": {"alice": {"role": "scorer", "hash": "$argon2id$...", "keys": [...]}}}
Passwords are stored only as salted, slow argon2id hashes (argon2-cffi). API keys are long
random strings, so they are stored as SHA-256 digests. The file may be mounted read-only from a
Kubernetes Secret: `UserStore` re-reads it when it changes, so edits (and revocations) apply
without a restart.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import tempfile
import threading
import time
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from .settings import NAME_RE

ROLES = ("admin", "scorer")
HASHER = PasswordHasher()
_DUMMY_HASH = HASHER.hash(secrets.token_urlsafe(16))   # so unknown users cost the same time
INITIAL_PASSWORD_FILE = "initial-admin-password"


def read_file(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {"users": {}}
    except ValueError as exc:
        raise ValueError(f"users file {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("users"), dict):
        raise ValueError(f'users file {path} must hold {{"users": {{name: {{"role", "hash"}}}}}}')
    return data


def write_file(path: Path, data: dict) -> None:
    """Atomic write with mode 0600: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def check_name(name: str) -> None:
    if not NAME_RE.match(name) or len(name) > 64:
        raise ValueError(f"user name {name!r} must be 1-64 characters of A-Z a-z 0-9 _ . -")


def set_user(path: Path, name: str, password: str, role: str | None = None) -> bool:
    """Create or update a user; returns True when created. Re-passwording revokes their tokens."""
    check_name(name)
    if len(password) < 8:
        raise ValueError("the password must be at least 8 characters")
    data = read_file(path)
    users = data["users"]
    created = name not in users
    record = users.get(name, {})
    role = role or record.get("role", "scorer")
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    record.update({"role": role, "hash": HASHER.hash(password)})
    users[name] = record
    write_file(path, data)
    return created


def remove_user(path: Path, name: str) -> bool:
    data = read_file(path)
    if data["users"].pop(name, None) is None:
        return False
    write_file(path, data)
    return True


def ensure_initial_admin(path: Path) -> str | None:
    """With no users at all, create `admin` with a random password.

    Only its hash goes in the users file; the password goes to `initial-admin-password` beside
    it (mode 0600). Returns the password (the caller shows it only on a terminal) or None.
    """
    if read_file(path)["users"]:
        return None
    password = secrets.token_urlsafe(18)
    set_user(path, "admin", password, role="admin")
    secret_file = path.parent / INITIAL_PASSWORD_FILE
    fd = os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(password + "\n")
    os.chmod(secret_file, 0o600)
    return password


def fingerprint(record: dict) -> str:
    """Changes whenever the user's password (hash) or role changes; tokens carry it."""
    return hashlib.sha256(f"{record.get('hash')}|{record.get('role')}".encode()).hexdigest()[:16]


class User:
    __slots__ = ("name", "role", "fingerprint")

    def __init__(self, name: str, role: str, fp: str):
        self.name, self.role, self.fingerprint = name, role, fp


class UserStore:
    """The users file as the server sees it, re-read when it changes on disk."""

    CHECK_EVERY = 1.0

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()
        self._stamp = None
        self._checked = 0.0
        self.users: dict = {}
        self.generation = 0            # bumps on every reload: caches keyed on it empty themselves
        self.reload()

    def _stat(self):
        try:
            st = self.path.stat()
            return (st.st_mtime_ns, st.st_size, st.st_ino)
        except FileNotFoundError:
            return None

    def reload(self) -> None:
        data = read_file(self.path)
        with self._lock:
            self.users = data["users"]
            self._stamp = self._stat()
            self.generation += 1

    def refresh(self) -> None:
        """Cheap check (at most once a second) whether the file changed; reload if so."""
        now = time.monotonic()
        if now - self._checked < self.CHECK_EVERY:
            return
        self._checked = now
        if self._stat() != self._stamp:
            try:
                self.reload()
            except ValueError:
                pass   # a half-edited file: keep serving with the last good one

    def get(self, name: str) -> User | None:
        record = self.users.get(name)
        if not record:
            return None
        return User(name, record.get("role", "scorer"), fingerprint(record))

    def verify_password(self, name: str, password: str) -> User | None:
        """Slow on purpose (argon2); unknown users cost the same time as wrong passwords."""
        record = self.users.get(name)
        try:
            HASHER.verify(record["hash"] if record else _DUMMY_HASH, password)
        except (VerificationError, InvalidHashError, KeyError):
            return None
        return self.get(name) if record else None
