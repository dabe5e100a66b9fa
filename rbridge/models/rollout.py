"""Rollouts: which versions of a model serve its traffic (canary, shadow) and what is captured.

Three keys of `<name>.json` (catalog.JSON_KEYS), checked here:

    "canary":  {"version": 3, "percent": 10, "sticky": true}   a share of traffic to retained version 3
    "shadow":  {"version": 3, "tolerance": 1e-6}               score a copy on version 3, compare, count
    "capture": {"sample": 0.05, "redact": ["ssn"], "url": "https://..."}   see gateway/capture.py

`version` is the number the versions store gave (GET /models/<name>/versions), so it names
exactly one set of files. Canary and shadow may also be set at run time by a publisher
(POST /models/<name>/rollout): that is written to `<models>/.versions/<name>/rollout.json`
and, while that file exists, it wins over `<name>.json` for canary and shadow. The file lives
in the shared models folder, so a restart keeps it and the other replicas learn it the way
they learn a publish: their reloader's scan sees the file change (reload.fingerprint).

A version other than the active one is loaded by the workers as a model of its own under an
internal name `<name>@<n>` (never a public name: '@' is not allowed in model names), so the
pool's queue, micro-batching and `wanted` version checks work for it unchanged, and the memory
a worker reports (and the pool's sizing by memory) counts every version it holds.

`Plan` is what one request needs to choose: built by the registry on each install.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

CANARY_KEYS = {"version", "percent", "sticky"}
SHADOW_KEYS = {"version", "tolerance"}
CAPTURE_KEYS = {"sample", "redact", "url", "batch"}
OVERRIDE = "rollout.json"
DEFAULT_TOLERANCE = 1e-6     # shadow: numbers agree within this, relative (absolute near zero)
DEFAULT_BATCH = 100          # capture to a URL: events per POST


def internal(name: str, number: int) -> str:
    """The name a retained version of `name` is loaded under in the workers."""
    return f"{name}@{number}"


def is_internal(name: str) -> bool:
    return "@" in name


@dataclasses.dataclass(frozen=True)
class Route:
    number: int          # the version's number in the versions store
    target: str          # the model the pool scores: the public name (the active version) or name@n
    percent: float = 0.0
    sticky: bool = False
    tolerance: float = DEFAULT_TOLERANCE


@dataclasses.dataclass(frozen=True)
class Plan:
    """How one model's requests are served now."""
    active: int | None                 # the active version's number (None: not in the store)
    canary: Route | None = None
    shadow: Route | None = None
    capture: dict | None = None
    loaded: dict = dataclasses.field(default_factory=dict)   # number -> target, every version loaded
    source: str = "none"               # where canary/shadow came from: "<name>.json", "rollout API", "none"
    errors: tuple = ()                 # why a configured canary/shadow is not served

    def describe(self) -> dict:
        def route(r):
            if r is None:
                return None
            out = {"version": r.number, "percent": r.percent, "sticky": r.sticky, "tolerance": r.tolerance}
            return out if r is self.canary else {"version": r.number, "tolerance": r.tolerance}
        return {"active": self.active, "canary": route(self.canary), "shadow": route(self.shadow),
                "capture": self.capture, "loaded": sorted(self.loaded), "source": self.source,
                "errors": list(self.errors)}


# -- checking <name>.json and the API's bodies -----------------------------------------------
def check_canary(value, where: str) -> dict | None:
    if value is None:
        return None
    _object(value, CANARY_KEYS, where)
    percent = value.get("percent")
    if not (_number(percent) and 0 <= percent <= 100):
        raise ValueError(f"{where}.percent must be a number from 0 to 100 (the share of requests)")
    sticky = value.get("sticky", False)
    if not isinstance(sticky, bool):
        raise ValueError(f"{where}.sticky must be true or false")
    return {"version": _version(value, where), "percent": float(percent), "sticky": sticky}


def check_shadow(value, where: str) -> dict | None:
    if value is None:
        return None
    _object(value, SHADOW_KEYS, where)
    tolerance = value.get("tolerance", DEFAULT_TOLERANCE)
    if not (_number(tolerance) and tolerance >= 0):
        raise ValueError(f"{where}.tolerance must be a number >= 0")
    return {"version": _version(value, where), "tolerance": float(tolerance)}


def check_capture(value, where: str) -> dict | None:
    """-> {"sample", "drop": [columns], "hash": [columns], "url": str | None, "batch"}."""
    if value is None:
        return None
    _object(value, CAPTURE_KEYS, where)
    sample = value.get("sample")
    if not (_number(sample) and 0 < sample <= 1):
        raise ValueError(f"{where}.sample must be a fraction of requests, more than 0 and at most 1 (0.05: 5%)")
    redact = value.get("redact", [])
    if isinstance(redact, list) and all(isinstance(c, str) for c in redact):
        redact = {c: "drop" for c in redact}
    if not (isinstance(redact, dict) and all(isinstance(c, str) and v in ("drop", "hash")
                                             for c, v in redact.items())):
        raise ValueError(f'{where}.redact must be a list of columns to leave out (["ssn"]) or an object '
                         'of column: "drop" or "hash" ({"email": "hash"})')
    url = value.get("url")
    if url is not None and not (isinstance(url, str) and url.startswith(("http://", "https://"))
                                and len(url) <= 2048):
        raise ValueError(f"{where}.url must be an http:// or https:// address to POST CloudEvents to")
    batch = value.get("batch", DEFAULT_BATCH)
    if not (isinstance(batch, int) and not isinstance(batch, bool) and 1 <= batch <= 10_000):
        raise ValueError(f"{where}.batch must be a whole number of events per POST, 1 to 10000")
    return {"sample": float(sample), "drop": sorted(c for c, v in redact.items() if v == "drop"),
            "hash": sorted(c for c, v in redact.items() if v == "hash"), "url": url, "batch": batch}


def _object(value, allowed: set, where: str) -> None:
    if not isinstance(value, dict):
        raise ValueError(f"{where} must be an object (or null), e.g. "
                         + ('{"version": 3, "percent": 10}' if "percent" in allowed else '{"version": 3}'
                            if "tolerance" in allowed else '{"sample": 0.05}'))
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")


def _version(value: dict, where: str) -> int:
    number = value.get("version")
    if not (isinstance(number, int) and not isinstance(number, bool) and number >= 1):
        raise ValueError(f"{where}.version must be a version number (GET /models/<name>/versions lists them)")
    return number


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# -- the run-time override, in the versions store --------------------------------------------
def override_path(versions_root: Path, name: str) -> Path:
    return Path(versions_root) / name / OVERRIDE


def read_override(versions_root: Path, name: str) -> dict | None:
    """{"canary": ..., "shadow": ...} set through the API, or None (then <name>.json says).
    A file that does not read or check is ignored with its reason (the caller logs it)."""
    path = override_path(versions_root, name)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        return {"canary": None, "shadow": None, "error": f"{path.name} cannot be read: {exc}"}
    try:
        return {"canary": check_canary(raw.get("canary"), "canary"),
                "shadow": check_shadow(raw.get("shadow"), "shadow")}
    except (ValueError, AttributeError) as exc:
        return {"canary": None, "shadow": None, "error": f"{path.name}: {exc}"}


def write_override(versions_root: Path, name: str, canary: dict | None, shadow: dict | None,
                   user: str | None) -> None:
    """Write the override by rename, so a replica scanning concurrently reads all of it or none."""
    path = override_path(versions_root, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{OVERRIDE}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"canary": canary, "shadow": shadow, "set_by": user,
                               "set_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, indent=1))
    os.replace(tmp, path)
