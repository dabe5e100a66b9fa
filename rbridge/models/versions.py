"""Model versions: every published (or hand-dropped) set of a model's files, kept for rollback.

Layout, a hidden folder inside the models folder (so replicas sharing the folder share it; the
catalogue and the watcher skip names starting with a dot):

    <models>/.versions/.lock              flock: numbering and adoption, across replicas
    <models>/.versions/.incoming/<id>/    uploads being received (moved, or removed on failure)
    <models>/.versions/<name>/<n>/        <name>.rds [<name>.R] [<name>.json] meta.json
                                          (or the Python model's <name>.joblib/.pkl/.onnx)

`n` is assigned by the server: 1, 2, 3, ... per model. meta.json (written last, by os.replace,
so a version without one is incomplete and ignored) holds the number, the user's `version`
label from <name>.json, the sha256 of each file, who published it, when and how.

The live files `<models>/<name>.*` are what is served; the active version is the one whose
files they equal. Making a version live copies each file beside its final name and renames it
over (os.replace), so a reload scanning concurrently never reads a half-written file. Files
dropped in by hand become a version the first time they are served (`adopt`).
Pruning keeps `keep` versions: the newest ones, and the active one whatever its age.

Threading: HTTP threads (through the reloader's lock) and the reloader thread; the flock
serialises numbering within and across processes.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

from rbridge.models.catalog import EXTS, MODEL_FILES, file_sha256

log = logging.getLogger("bridge.versions")
ROOT = ".versions"
META = "meta.json"


class VersionStore:
    def __init__(self, models_dir: Path, keep: int = 5):
        self.models_dir, self.keep = Path(models_dir), keep
        self.root = self.models_dir / ROOT
        self._digests: dict[tuple, str] = {}     # (path, size, mtime_ns) -> sha256

    # -- reading -----------------------------------------------------------------------------
    def read_only(self) -> str | None:
        """Why versions cannot be written here (a read-only mount), or None."""
        try:
            (self.root / ".incoming").mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            return f"the models folder {self.models_dir} is not writable ({exc.strerror})"
        if not os.access(self.root, os.W_OK) or not os.access(self.models_dir, os.W_OK):
            return f"the models folder {self.models_dir} is mounted read-only"
        return None

    def list(self, name: str) -> list[dict]:
        """The versions of `name`, oldest first, each meta.json with `active` added."""
        folder = self.root / name
        if not folder.is_dir():
            return []
        live = self.live_files(name)
        out = []
        for sub in folder.iterdir():
            meta = _read_meta(sub)
            if meta is not None:
                out.append({**meta, "active": bool(live) and meta["files"] == live})
        return sorted(out, key=lambda m: m["version"])

    def folder(self, name: str, number: int) -> Path | None:
        """The folder of version `number` of `name`, if it exists and is complete."""
        path = self.root / name / str(number)
        return path if _read_meta(path) is not None else None

    def live_files(self, name: str) -> dict:
        """ext -> sha256 of the model's files in the models folder now."""
        return self._files(self.models_dir, name)

    # -- writing -----------------------------------------------------------------------------
    def incoming(self) -> Path:
        """A fresh folder to receive an upload into (on the same file system as the versions)."""
        base = self.root / ".incoming"
        base.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(dir=base))

    def add(self, name: str, folder: Path, user: str | None, how: str, label: str | None = None) -> dict:
        """Keep `folder` (holding `<name>.rds` etc.) as the next version of `name`; it is moved.

        Files equal to an existing version's are not stored twice: that version is returned.
        """
        files = self._files(folder, name)
        with self._locked():
            for meta in self.list(name):
                if meta["files"] == files:
                    shutil.rmtree(folder, ignore_errors=True)
                    return meta
            numbers = [int(p.name) for p in (self.root / name).glob("*") if p.name.isdigit()]
            number = max(numbers, default=0) + 1
            target = self.root / name / str(number)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(folder, target)
            digest = next(files[ext] for ext in MODEL_FILES if ext in files)
            meta = {"version": number, "label": label, "sha256": digest, "files": files,
                    "published_by": user, "published_at": _now(), "how": how}
            tmp = target / f".{META}.tmp"
            tmp.write_text(json.dumps(meta, indent=1))
            os.replace(tmp, target / META)
            self._prune(name)
        return {**meta, "active": False}

    def adopt(self, name: str, how: str = "models folder") -> dict | None:
        """Record the live files of `name` as a version unless one has them already."""
        files = self.live_files(name)
        if not MODEL_FILES.keys() & files or any(m["files"] == files for m in self.list(name)):
            return None
        staging = self.incoming()
        for ext in files:
            shutil.copy2(self.models_dir / f"{name}{ext}", staging / f"{name}{ext}")
        return self.add(name, staging, None, how, label=label_of(staging / f"{name}.json"))

    def adopt_served(self, names) -> None:
        """`adopt` each model being served; a read-only folder or a failing copy only logs."""
        if self.read_only():
            return
        for name in names:
            try:
                self.adopt(name)
            except OSError as exc:
                log.warning("could not keep %s's files as a version: %s", name, exc)

    def make_live(self, name: str, number: int) -> None:
        """Put version `number`'s files in the models folder (each renamed into place)."""
        source = self.folder(name, number)
        for ext in EXTS:
            live, kept = self.models_dir / f"{name}{ext}", source / f"{name}{ext}"
            if kept.exists():
                tmp = self.models_dir / f".{name}{ext}.{os.getpid()}.tmp"
                shutil.copy2(kept, tmp)
                os.replace(tmp, live)
            else:           # e.g. the .R of a version that had one, or another kind's model file
                live.unlink(missing_ok=True)

    def retire(self, name: str) -> None:
        """Stop `name` from being in the models folder; its files stay as a version."""
        self.adopt(name, how="deleted")
        for ext in EXTS:
            (self.models_dir / f"{name}{ext}").unlink(missing_ok=True)

    def discard(self, folder: Path) -> None:
        shutil.rmtree(folder, ignore_errors=True)

    # -- inside ------------------------------------------------------------------------------
    def _files(self, folder: Path, name: str) -> dict:
        out = {}
        for ext in EXTS:
            path = folder / f"{name}{ext}"
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            key = (str(path), st.st_size, st.st_mtime_ns)
            if key not in self._digests:
                self._digests[key] = file_sha256(path)
            out[ext] = self._digests[key]
        return out

    def _prune(self, name: str) -> None:
        """Drop the oldest versions until `keep` are left, never the active one (lock held)."""
        versions = self.list(name)
        extra = len(versions) - self.keep
        for meta in versions:
            if extra <= 0:
                break
            if not meta["active"]:
                shutil.rmtree(self.root / name / str(meta["version"]), ignore_errors=True)
                extra -= 1

    @contextlib.contextmanager
    def _locked(self):
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)


def _read_meta(folder: Path) -> dict | None:
    try:
        return json.loads((folder / META).read_text())
    except (OSError, ValueError):
        return None


def label_of(config: Path) -> str | None:
    """The user's `version` from <name>.json, if it has one."""
    try:
        value = json.loads(config.read_text()).get("version")
    except (OSError, ValueError, AttributeError):
        return None
    return None if value is None else str(value)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
