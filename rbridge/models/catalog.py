"""The model folder: which models exist, their files, versions and per-model settings.

Every `DIR/<name>.rds` is a model `<name>`, with an optional `<name>.R` (score/init) and an
optional `<name>.json`. Names are restricted to `[A-Za-z0-9_.-]`; requests only ever choose a
model by a name from this catalogue, so no request can make the bridge read outside DIR.

A bad `<name>.json` does not stop the server: the model is listed as failed with the reason.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import re
import uuid
import zoneinfo
from pathlib import Path

from rbridge.models import rollout
from rbridge.pool.protocol import ModelSpec
from rbridge.settings import NAME_RE

TYPES = ("numeric", "integer", "factor", "character", "logical", "date", "datetime", "difftime")
JSON_KEYS = {"version", "description", "schema", "predict_args", "timeout", "batch", "packages",
             "max_concurrency", "canary", "shadow", "capture"}   # the last three: rbridge/models/rollout.py
COLUMN_KEYS = {"name", "type", "levels", "na", "ordered", "description", "tz", "units"}
DIFFTIME_UNITS = ("secs", "mins", "hours", "days", "weeks")   # R's difftime units
PACKAGE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9.]*[A-Za-z0-9]$")  # R's rule for package names
BATCH_KEYS = {"max_rows", "max_wait_ms"}
EXTS = (".rds", ".R", ".json")      # a model's files: <name>.rds, optional <name>.R and <name>.json


@dataclasses.dataclass
class Entry:
    """One model as found on disk."""
    name: str
    spec: ModelSpec | None
    error: str | None = None
    description: str = ""
    timeout: float | None = None
    batch_max_rows: int | None = None
    batch_max_wait_ms: float | None = None
    max_concurrency: int | None = None      # workers it may hold at once (default: see Pool)
    canary: dict | None = None              # rollout.check_canary: {"version", "percent", "sticky"}
    shadow: dict | None = None              # rollout.check_shadow: {"version", "tolerance"}
    capture: dict | None = None             # rollout.check_capture: {"sample", "drop", "hash", "url", ...}
    size: int = 0
    mtime: float = 0.0
    stamp: tuple = ()       # (ext, size, mtime_ns) of the .rds/.R/.json: any change means reload
    unreadable: bool = False   # a file could not be read (permissions, I/O): read again on each scan


def scan(models_dir: Path, snapshots: Path | None = None, previous: dict | None = None) -> dict[str, Entry]:
    """Read the folder. Files with names outside the allowed set are skipped.

    With `snapshots`, each model's files are copied there first and the workers load the copy:
    a respawned worker then loads exactly the version that was accepted, even after the files
    in the folder changed (or broke). Entries whose files did not change are taken from `previous`.
    """
    entries = {}
    if not models_dir.is_dir():
        return entries
    for rds in sorted(models_dir.glob("*.rds")):
        name = rds.name[:-4]
        if not NAME_RE.match(name) or not rds.is_file():
            continue
        old = (previous or {}).get(name)
        # A failed entry is read again: chmod, a remount or a finished copy fix a file without
        # changing its size or mtime.
        if old is not None and not old.unreadable and old.stamp == files_stamp(models_dir, name):
            entries[name] = old
        else:
            entries[name] = read_entry(models_dir, name, snapshots)
    return entries


def files_stamp(models_dir: Path, name: str) -> tuple:
    """(ext, size, mtime_ns) of each of the model's files present: changes whenever one does."""
    out = []
    for ext in EXTS:
        try:
            st = (models_dir / f"{name}{ext}").stat()
        except FileNotFoundError:
            continue
        out.append((ext, st.st_size, st.st_mtime_ns))
    return tuple(out)


def read_entry(models_dir: Path, name: str, snapshots: Path | None = None) -> Entry:
    """One model's entry; a file that cannot be read or checked makes an entry with the error
    (that model fails, the others load), never an exception."""
    stamp = files_stamp(models_dir, name)
    folder = models_dir
    try:
        if snapshots is not None:
            folder = snapshots / name / uuid.uuid4().hex[:8]
            folder.mkdir(parents=True)
            for ext, _, _ in stamp:
                shutil.copy2(models_dir / f"{name}{ext}", folder / f"{name}{ext}")
        rds = folder / f"{name}.rds"
        script = folder / f"{name}.R"
        config_path = folder / f"{name}.json"
        stat = rds.stat()
        digest = file_sha256(rds)
        config = _read_config(config_path) if config_path.exists() else {}
    except (OSError, ValueError) as exc:
        if folder is not models_dir:
            shutil.rmtree(folder, ignore_errors=True)
        return Entry(name, None, error=_file_error(exc), stamp=stamp, unreadable=isinstance(exc, OSError))
    batch = config.get("batch", {})
    spec = ModelSpec(
        name=name, rds=str(rds.resolve()),
        script=str(script.resolve()) if script.is_file() else None,
        version=str(config.get("version") or digest[:12]), sha256=digest,
        predict_args=config.get("predict_args", {}), packages=config.get("packages", []),
        schema=config.get("schema", {}).get("columns"))
    return Entry(name, spec, description=config.get("description", ""),
                 timeout=config.get("timeout"), batch_max_rows=batch.get("max_rows"),
                 batch_max_wait_ms=batch.get("max_wait_ms"), max_concurrency=config.get("max_concurrency"),
                 canary=config.get("canary"), shadow=config.get("shadow"), capture=config.get("capture"),
                 size=stat.st_size, mtime=stat.st_mtime,
                 stamp=stamp)


def _file_error(exc: Exception) -> str:
    """An error about a model's files, naming the file (without the snapshot folder's path)."""
    if isinstance(exc, OSError) and exc.filename:
        return f"cannot read {Path(exc.filename).name}: {exc.strerror}"
    return str(exc)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _read_config(path: Path) -> dict:
    """Read and check <name>.json; raise ValueError naming the file and the key."""
    try:
        config = json.loads(path.read_text())
    except ValueError as exc:
        raise ValueError(f"{path.name} is not valid JSON: {exc}") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path.name} must hold a JSON object")
    _only(config, JSON_KEYS, path.name)
    if "timeout" in config and not (_is_number(config["timeout"]) and config["timeout"] > 0):
        raise ValueError(f"{path.name}: timeout must be a positive number of seconds")
    if "max_concurrency" in config and not (isinstance(config["max_concurrency"], int)
                                            and not isinstance(config["max_concurrency"], bool)
                                            and config["max_concurrency"] >= 1):
        raise ValueError(f"{path.name}: max_concurrency must be a whole number of workers, at least 1")
    if "predict_args" in config and not isinstance(config["predict_args"], dict):
        raise ValueError(f"{path.name}: predict_args must be an object of argument: value")
    packages = config.get("packages", [])
    if not (isinstance(packages, list) and all(isinstance(p, str) and PACKAGE_RE.match(p) for p in packages)):
        raise ValueError(f"{path.name}: packages must be a list of R package names, e.g. [\"splines\"]")
    batch = config.get("batch", {})
    if not isinstance(batch, dict):
        raise ValueError(f"{path.name}: batch must be an object")
    _only(batch, BATCH_KEYS, f"{path.name} batch")
    for key in BATCH_KEYS & set(batch):
        if not (_is_number(batch[key]) and batch[key] >= 0):
            raise ValueError(f"{path.name}: batch.{key} must be a number >= 0")
    for key, check in (("canary", rollout.check_canary), ("shadow", rollout.check_shadow),
                       ("capture", rollout.check_capture)):
        if key in config:
            config[key] = check(config[key], f"{path.name}: {key}")
    schema = config.get("schema")
    if schema is not None:
        if not isinstance(schema, dict) or not isinstance(schema.get("columns"), list):
            raise ValueError(f"{path.name}: schema must be {{\"columns\": [...]}}")
        _only(schema, {"columns"}, f"{path.name} schema")
        seen = set()
        for i, col in enumerate(schema["columns"]):
            where = f"{path.name}: schema.columns[{i}]"
            if not isinstance(col, dict) or not isinstance(col.get("name"), str):
                raise ValueError(f"{where} must be an object with a name")
            _only(col, COLUMN_KEYS, where)
            if col["name"] in seen:
                raise ValueError(f"{where}: column {col['name']!r} appears twice")
            seen.add(col["name"])
            if col.get("type") not in TYPES:
                raise ValueError(f"{where}: type must be one of {', '.join(TYPES)}")
            levels = col.get("levels")
            if col["type"] == "factor" and not (isinstance(levels, list) and levels
                                                 and all(isinstance(v, str) for v in levels)):
                raise ValueError(f"{where}: a factor needs levels, a list of strings in training order")
            if levels is not None and not isinstance(levels, list):
                raise ValueError(f"{where}: levels must be a list of strings")
            _check_time_keys(col, where)
    return config


def _check_time_keys(col: dict, where: str) -> None:
    """tz only on datetime columns (an Olson name), units only on difftime columns (R's units)."""
    if "tz" in col:
        if col["type"] != "datetime":
            raise ValueError(f"{where}: tz applies to datetime columns only")
        try:
            zoneinfo.ZoneInfo(col["tz"] if isinstance(col["tz"], str) else "")
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{where}: tz {col['tz']!r} is not a time zone name (e.g. \"UTC\", "
                             "\"Europe/Berlin\")") from None
    if col["type"] == "difftime" and col.get("units") not in DIFFTIME_UNITS:
        raise ValueError(f"{where}: a difftime needs units, one of {', '.join(DIFFTIME_UNITS)}")
    if "units" in col and col["type"] != "difftime":
        raise ValueError(f"{where}: units applies to difftime columns only")


def _only(obj: dict, allowed: set, where: str) -> None:
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
