"""The users file: who may call the service, with which role, and their hashed credentials.

Format (JSON, mode 0600, written atomically):
    {"users": {"alice": {"role": "scorer", "hash": "$argon2id$...", "keys": [...]}}}
Passwords are stored only as salted, slow argon2id hashes (argon2-cffi). API keys are long
random strings, so they are stored as SHA-256 digests. The file may be mounted read-only from a
Kubernetes Secret: `UserStore` checks it on every authenticated request (one stat) and re-reads
it when it changed, so edits and revocations apply on the next request, without a restart. A
file that does not check out as a whole (wrong JSON, a field of the wrong type, a hash that is
not argon2's), or that disappears, is not applied: the last good one keeps serving and the log
says why. A user whose role the server does not define is refused (403), never taken as a scorer.
The CLI edits it under an exclusive lock (`editing`), so two edits at once do not lose one.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import logging
import os
import secrets
import tempfile
import threading
import time
from pathlib import Path

from argon2 import PasswordHasher, extract_parameters
from argon2.exceptions import InvalidHashError, VerificationError

from rbridge.settings import NAME_RE

log = logging.getLogger("bridge.users")
ROLES = ("scorer", "publisher", "admin")   # each may do what the ones before it may
HASHER = PasswordHasher()
_DUMMY_HASH = HASHER.hash(secrets.token_urlsafe(16))   # so unknown users cost the same time
INITIAL_PASSWORD_FILE = "initial-admin-password"


def read_file(path: Path) -> dict:
    """The parsed users file, checked as a whole (ValueError says what is wrong and where)."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {"users": {}}
    except ValueError as exc:
        raise ValueError(f"users file {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("users"), dict):
        raise ValueError(f'users file {path} must hold {{"users": {{name: {{"role", "hash"}}}}}}')
    for name, record in data["users"].items():
        problem = _record_problem(record)
        if problem:
            raise ValueError(f"users file {path}: user {name!r}: {problem}")
    return data


def _record_problem(record) -> str | None:
    """What is wrong with one user's record (types only: an unknown role is refused at sign-in)."""
    if not isinstance(record, dict):
        return 'must be an object {"role", "hash", "keys"}'
    if not isinstance(record.get("role", "scorer"), str):
        return '"role" must be a string'
    stored = record.get("hash")
    if not isinstance(stored, str):
        return '"hash" must be a string (an argon2 hash)'
    try:
        extract_parameters(stored)
    except InvalidHashError:
        return '"hash" is not an argon2 hash (set the password again: rbridge user passwd)'
    keys = record.get("keys", [])
    if not isinstance(keys, list) or not all(
            isinstance(k, dict) and isinstance(k.get("id"), str) and isinstance(k.get("sha256"), str)
            and _is_digest(k["sha256"]) for k in keys):
        return '"keys" must be a list of {"id", "sha256", ...} (as rbridge key create writes them)'
    return None


def _is_digest(text: str) -> bool:
    try:
        return len(bytes.fromhex(text)) == 32
    except ValueError:
        return False


def write_file(path: Path, data: dict) -> None:
    """Atomic write with mode 0600: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def editing(path: Path):
    """Read-modify-write the users file under an exclusive lock (a `.<name>.lock` file beside it).

    Yields the parsed file; it is written back (atomically, 0600) when the block ends normally.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.parent / f".{path.name}.lock", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        data = read_file(path)
        yield data
        write_file(path, data)
    finally:
        os.close(fd)


def check_name(name: str) -> None:
    if not NAME_RE.match(name) or len(name) > 64:
        raise ValueError(f"user name {name!r} must be 1-64 characters of A-Z a-z 0-9 _ . -")


def set_user(path: Path, name: str, password: str, role: str | None = None) -> bool:
    """Create or update a user; returns True when created. Re-passwording revokes their tokens."""
    check_name(name)
    if len(password) < 8:
        raise ValueError("the password must be at least 8 characters")
    if role is not None and role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    hashed = HASHER.hash(password)          # slow: outside the lock
    with editing(path) as data:
        users = data["users"]
        created = name not in users
        record = users.get(name, {})
        record.update({"role": role or record.get("role", "scorer"), "hash": hashed})
        users[name] = record
    return created


def remove_user(path: Path, name: str) -> bool:
    """Remove a user with their keys; their tokens stop working on the next request."""
    with editing(path) as data:
        removed = data["users"].pop(name, None) is not None
    return removed


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

    CHECK_EVERY = 0.0       # seconds between stats of the file (one stat costs a few µs)

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()
        self._stamp = None
        self._checked = 0.0
        self.users: dict = {}
        self.keys = KeyIndex({})
        self.generation = 0            # bumps on every reload: caches keyed on it empty themselves
        self.reload()

    def _stat(self):
        try:
            st = self.path.stat()
            return (st.st_mtime_ns, st.st_size, st.st_ino)
        except FileNotFoundError:
            return None

    def reload(self) -> None:
        stamp = self._stat()
        if stamp is None and self._stamp is not None:
            raise ValueError(f"users file {self.path} is gone")   # keep the last good one
        data = read_file(self.path)
        index = KeyIndex(data["users"])
        for name, record in data["users"].items():
            if record.get("role", "scorer") not in ROLES:
                log.error("users file %s: user %r has role %r, which this server does not define "
                          "(%s): that user is refused", self.path, name, record["role"], ", ".join(ROLES))
        with self._lock:
            self.users, self.keys = data["users"], index
            self._stamp = stamp
            self.generation += 1

    def refresh(self) -> None:
        """Cheap check whether the file changed (one stat); reload if so."""
        if self.CHECK_EVERY:
            now = time.monotonic()
            if now - self._checked < self.CHECK_EVERY:
                return
            self._checked = now
        stamp = self._stat()
        if stamp != self._stamp:
            try:
                self.reload()
            except (ValueError, OSError) as exc:   # keep serving with the last good file
                self._stamp = stamp
                log.error("users file %s changed but cannot be read (%s); still using the previous "
                          "version", self.path, exc)

    def get(self, name: str) -> User | None:
        record = self.users.get(name)
        if not isinstance(record, dict):
            return None
        return User(name, record.get("role", "scorer"), fingerprint(record))

    def by_key(self, key: str) -> tuple[User, str] | None:
        """(user, key_id) for a presented API key, or None."""
        hit = self.keys.find(key)
        user = self.get(hit[0]) if hit else None
        return (user, hit[1]) if user else None

    def verify_password(self, name: str, password: str) -> User | None:
        """Slow on purpose (argon2); unknown users cost the same time as wrong passwords."""
        record = self.users.get(name)
        stored = record.get("hash") if isinstance(record, dict) else None
        known = isinstance(stored, str)
        try:
            HASHER.verify(stored if known else _DUMMY_HASH, password)
        except VerificationError:
            return None     # InvalidHashError is the server's fault, not a failed guess: it raises
        return self.get(name) if known else None


class KeyIndex:
    """digest -> (user, key id), built from the users file each time it is read."""

    def __init__(self, all_users: dict):
        self._by_digest: dict[bytes, tuple[bytes, str, str]] = {}
        for name, record in all_users.items():
            for k in record.get("keys", []) if isinstance(record, dict) else []:
                try:
                    stored = bytes.fromhex(k["sha256"])
                    self._by_digest[stored] = (stored, name, str(k["id"]))
                except (KeyError, TypeError, ValueError):
                    continue     # a damaged entry matches nothing

    def find(self, key: str) -> tuple[str, str] | None:
        """(user, key_id) for a presented key, or None.

        The lookup is keyed by the SHA-256 of what was sent, which a caller cannot steer towards
        a stored digest, so its timing tells nothing about stored keys; the final check is a
        constant-time comparison all the same.
        """
        presented = hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()
        hit = self._by_digest.get(presented)
        if hit is None or not hmac.compare_digest(presented, hit[0]):
            return None
        return hit[1], hit[2]

    def __len__(self) -> int:
        return len(self._by_digest)
