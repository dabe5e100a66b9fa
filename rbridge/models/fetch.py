"""Fetch model files listed in a manifest, so that models can live apart from the image.

At start the server may download `.rds` files (and their `.R` scripts and `.json` metadata)
into its models folder from HTTPS URLs, for example Azure Blob Storage SAS URLs, and verify
each against the SHA-256 the manifest gives with it. The manifest is a JSON file, mounted
from a Kubernetes Secret because SAS URLs are credentials:

    {"files": [{"url": "https://acct.blob.core.windows.net/models/credit.rds?sv=...&sig=...",
                "sha256": "<64 hex digits>", "name": "credit.rds"}]}

Rules, all checked before anything is downloaded:
- `url` is https:// (http:// only with `allow_http=True`, `--allow-http-fetch`);
  a redirect to plain HTTP is refused the same way;
- `name` matches `[A-Za-z0-9_.-]+\\.(rds|joblib|pkl|onnx|R|json)` (catalog.EXTS): no paths, no
  hidden files;
- `sha256` is 64 hex digits; every name appears once.

Each file is streamed to a temporary file in the destination folder, hashed on the way, and
renamed over `dest_dir/name` only when its hash matches: a reader never sees half a file or a
file with the wrong content. A file already present with the right hash is not downloaded
again (an emptyDir survives container restarts). Every failure raises `FetchError` naming the
file; the caller (the server's start-up) turns it into a not-ready state with that message.

The query string of a URL (where a SAS token lives) is never logged nor put in an error
message: URLs are shown as scheme://host/path.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import requests

log = logging.getLogger("bridge.fetch")

NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+\.(rds|joblib|pkl|onnx|R|json)$")   # a model's files: catalog.EXTS
SHA256_RE = re.compile(r"^[0-9a-fA-F]{64}$")
CHUNK = 1 << 20


class FetchError(Exception):
    """A model file could not be fetched or verified; the message says which and why."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def redact(url: str) -> str:
    """scheme://host[:port]/path: the URL without credentials, query string or fragment."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
        return urlunsplit((parts.scheme, host, parts.path, "", ""))
    except ValueError:
        return "<unparsable URL>"


def _scrub(text: str) -> str:
    """Drop query strings from free text (requests puts the full URL in its exceptions)."""
    return re.sub(r"\?[^\s'\"()<>]*", "?<redacted>", text)


class _ScrubQueries(logging.Filter):
    """urllib3 logs request lines with their query string at DEBUG: take it out."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = _scrub(record.getMessage()), ()
        return True


_URLLIB3_LOG = logging.getLogger("urllib3.connectionpool")
if not any(isinstance(f, _ScrubQueries) for f in _URLLIB3_LOG.filters):
    _URLLIB3_LOG.addFilter(_ScrubQueries())


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(manifest_path, allow_http: bool = False) -> list[dict]:
    """Read and check the manifest; returns its entries with `sha256` lower-cased."""
    path = Path(manifest_path)
    try:
        doc = json.loads(path.read_text())
    except OSError as exc:
        raise FetchError(f"cannot read fetch manifest {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise FetchError(f"fetch manifest {path} is not valid JSON: {exc}") from None
    files = doc.get("files") if isinstance(doc, dict) else None
    if not isinstance(files, list):
        raise FetchError(f'fetch manifest {path} must be a JSON object {{"files": [...]}}')
    entries, seen = [], set()
    for i, item in enumerate(files):
        where = f"fetch manifest {path}, files[{i}]"
        if not isinstance(item, dict):
            raise FetchError(f"{where}: must be an object with url, sha256 and name")
        missing = [k for k in ("url", "sha256", "name") if not isinstance(item.get(k), str)]
        if missing:
            raise FetchError(f"{where}: missing or not a string: {', '.join(missing)}")
        unknown = sorted(set(item) - {"url", "sha256", "name"})
        if unknown:
            raise FetchError(f"{where}: unknown key(s) {', '.join(unknown)}")
        name, url, sha = item["name"], item["url"], item["sha256"]
        if not NAME_RE.match(name) or name.startswith("."):
            raise FetchError(f"{where}: name {name!r} is not allowed: use a plain file name "
                             f"matching {NAME_RE.pattern} (no folders)")
        if name in seen:
            raise FetchError(f"{where}: name {name!r} appears twice")
        seen.add(name)
        if not SHA256_RE.match(sha):
            raise FetchError(f"{where} ({name}): sha256 must be 64 hex digits")
        _check_scheme(url, allow_http, f"{where} ({name})")
        entries.append({"url": url, "sha256": sha.lower(), "name": name})
    return entries


def _check_scheme(url: str, allow_http: bool, where: str) -> None:
    scheme = urlsplit(url).scheme.lower()
    if scheme == "https":
        return
    if scheme == "http":
        if allow_http:
            return
        raise FetchError(f"{where}: refusing plain-HTTP URL {redact(url)}: use https:// "
                         "(or allow it explicitly with --allow-http-fetch)")
    raise FetchError(f"{where}: unsupported URL scheme {scheme or '(none)'!r} in {redact(url)}: "
                     "use https://")


def fetch_models(manifest_path, dest_dir, allow_http: bool = False, timeout: float = 60,
                 ca_bundle=None, session: requests.Session | None = None) -> list[Path]:
    """Download and verify every file of the manifest into `dest_dir`; return their paths.

    `timeout` is the connect and read timeout of each request in seconds. `ca_bundle` is a
    PEM file of trusted CAs (default: requests' own, or REQUESTS_CA_BUNDLE). Raises
    `FetchError` on the first file that cannot be fetched or whose hash does not match; files
    already placed stay, a failed one leaves nothing behind.
    """
    entries = read_manifest(manifest_path, allow_http=allow_http)
    dest = Path(dest_dir)
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FetchError(f"cannot create models folder {dest}: {exc.strerror or exc}") from None
    own_session = session is None
    session = session or requests.Session()
    try:
        return [_fetch_one(session, entry, dest, allow_http, timeout, ca_bundle)
                for entry in entries]
    finally:
        if own_session:
            session.close()


def _fetch_one(session, entry, dest: Path, allow_http, timeout, ca_bundle) -> Path:
    name, url, expected = entry["name"], entry["url"], entry["sha256"]
    shown = redact(url)
    target = dest / name
    if target.is_file() and _sha256_of(target) == expected:
        log.info("model file %s already present with the right SHA-256", name,
                 extra={"fields": {"file": name, "url": shown}})
        return target

    started = time.monotonic()
    fd, tmp_name = tempfile.mkstemp(dir=dest, prefix=f".{name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        digest, size = hashlib.sha256(), 0
        with os.fdopen(fd, "wb") as out:
            try:
                with session.get(url, stream=True, timeout=timeout,
                                 verify=ca_bundle if ca_bundle else True) as resp:
                    for hop in [*resp.history, resp]:
                        _check_scheme(hop.url, allow_http, f"{name}: redirected")
                    if resp.status_code != 200:
                        raise FetchError(f"cannot fetch {name} from {shown}: "
                                         f"HTTP {resp.status_code} {resp.reason or ''}".rstrip())
                    for block in resp.iter_content(CHUNK):
                        digest.update(block)
                        out.write(block)
                        size += len(block)
            except requests.RequestException as exc:
                raise FetchError(f"cannot fetch {name} from {shown}: "
                                 f"{type(exc).__name__}: {_scrub(str(exc))}") from None
            out.flush()
            os.fsync(out.fileno())
        got = digest.hexdigest()
        if got != expected:
            raise FetchError(f"SHA-256 mismatch for {name} from {shown}: expected {expected}, "
                             f"got {got} ({size} bytes); the file was not installed")
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except OSError as exc:
        raise FetchError(f"cannot write {name} into {dest}: {exc.strerror or exc}") from None
    finally:
        tmp.unlink(missing_ok=True)
    log.info("fetched model file %s (%d bytes, SHA-256 verified)", name, size,
             extra={"fields": {"file": name, "url": shown, "bytes": size,
                               "seconds": round(time.monotonic() - started, 3)}})
    return target
