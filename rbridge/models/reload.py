"""Hot reload: watch the models folder and swap new model versions in without failing a request.

Watching is polling (every --reload-interval seconds): it works the same on local disks, bind
mounts and Kubernetes volumes, where inotify misses ConfigMap/Secret symlink swaps. A file is
picked up only when its size and mtime were the same in two consecutive scans, so a file still
being copied is not loaded half-written (copy-then-rename is atomic and needs no settling).

A reload (a change seen by the watcher, or POST /admin/reload):
  1. a candidate worker loads the new set of models and warms each one up;
  2. a new or changed model that fails is rejected: R's message goes to the log and /models,
     and the previous version (if any) keeps serving;
  3. the registry installs the new set (its generation moves on), and the pool replaces each
     slot's worker in turn by one of the new generation, started before the old one retires
     (Pool.roll_over); while they coexist, each worker takes only requests for models it
     holds, so nothing fails across the swap.
A removed model stops being served at once.

Publishing (PUT /models/<name>, activating a version) takes the same way with files that are
not yet in the models folder: `publish` loads them with the served set in a candidate worker;
only when they load and warm up does it put them in the folder (the caller's `commit`) and
roll the candidate in; otherwise the folder is untouched and `Rejected` carries R's message.
Each set a reload installs is recorded in the versions store (hand-dropped files included).

Rollouts (rbridge/models/rollout.py) take the same way: every reload and publish resolves each
model's canary and shadow into extra versions (`name@n`) loaded beside the served set, so a
change of rollout.json (written by POST /models/<name>/rollout here, or by another replica:
the fingerprint covers it) rolls workers that hold the new set in without failing a request.
`rollout` tries a new canary/shadow in a candidate first, like `publish`.

Threading: one watcher thread; reloads and publishes are serialised by a lock (the watcher,
the admin endpoint and the management endpoints may ask at the same time).
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import threading
import time
from pathlib import Path

from rbridge.models import catalog, rollout
from rbridge.models.registry import Registry
from rbridge.models.versions import ROOT as VERSIONS_ROOT, VersionStore
from rbridge.pool.pool import Pool
from rbridge.pool.process import await_ready

log = logging.getLogger("bridge.reload")


def fingerprint(models_dir) -> dict:
    """name -> (size, mtime_ns) of each model's .rds/.R/.json and of its rollout.json in the
    versions store (a rollout set on another replica), to notice any change."""
    out = {}
    if not models_dir.is_dir():
        return out
    for path in models_dir.glob(f"{VERSIONS_ROOT}/*/{rollout.OVERRIDE}"):
        try:
            st = path.stat()
        except FileNotFoundError:
            continue
        out.setdefault(path.parent.name, []).append(("rollout", st.st_size, st.st_mtime_ns))
    for path in models_dir.iterdir():
        stem, dot, ext = path.name.rpartition(".")
        if ext not in ("rds", "R", "json") or not catalog.NAME_RE.match(stem or "-") or not path.is_file():
            continue
        try:
            st = path.stat()
        except FileNotFoundError:
            continue
        out.setdefault(stem, []).append((ext, st.st_size, st.st_mtime_ns))
    return {name: tuple(sorted(files)) for name, files in out.items()}


class Rejected(Exception):
    """A published model that did not load or warm up; the message is R's."""


class Reloader:
    def __init__(self, registry: Registry, pool: Pool, interval: float, versions: VersionStore | None = None):
        self.registry, self.pool, self.interval, self.versions = registry, pool, interval, versions
        self.models_dir = registry.models_dir
        self._lock = threading.Lock()
        self._seen = fingerprint(self.models_dir)
        self._stopping = False

    def start(self) -> None:
        if self.interval > 0:
            threading.Thread(target=self._watch, name="model-watcher", daemon=True).start()

    def stop(self) -> None:
        self._stopping = True

    def _watch(self) -> None:
        pending = None
        while not self._stopping:
            time.sleep(self.interval)
            if not self.pool.started or self.pool.draining:
                continue
            if not self.models_dir.is_dir():   # gone: serve what is loaded (/readyz says why)
                pending = None
                continue
            try:
                pending = self._scan_once(pending)
            except Exception:                  # logged; the next scan tries again
                log.exception("reload failed")
                pending = None

    def _scan_once(self, pending):
        """One scan of the watcher: reload a change once it has settled, and retry files that
        could not be read. Returns the fingerprint still settling (or None)."""
        now = fingerprint(self.models_dir)
        if now == self._seen:
            if self.registry.unreadable():
                self.reload("retrying model files that could not be read")
            return None
        if now != pending:               # changed since the last scan: let it settle first
            return now
        self.reload("the models folder changed")
        return None

    def reload(self, reason: str) -> dict:
        """Scan, load what changed into new workers, and roll them in. Returns a summary."""
        with self._lock:
            return self._reload(reason)

    def publish(self, name: str, folder, commit, reason: str, override: dict | None = None):
        """Serve `name` from the files in `folder` if they load and warm up beside the served set.

        `commit()` (called only then, before the swap) puts the files in the models folder.
        `override` ({"canary", "shadow"}): the model's rollout from then on (a promote clears
        its canary in the same swap). Returns the model's ModelInfo; raises Rejected with R's
        message, the served set unchanged.
        """
        with self._lock:
            entry = catalog.read_entry(folder, name, self.registry.snapshots)
            if entry.spec is None:
                raise Rejected(entry.error)
            overrides = {name: override} if override is not None else None
            extras, _ = self.registry.resolve({**self.registry.entries, name: entry}, overrides)
            entries = {**self.registry.entries, **extras, name: entry}
            try:
                proc = self._start_candidate(entries)
            except RuntimeError:
                self._forget(entry)
                raise
            info = next(m for m in proc.ready.models if m.name == name)
            if not info.ok:
                proc.kill()
                self._forget(entry)
                log.error("%s: model %s rejected, the served version is unchanged: %s", reason, name, info.error)
                raise Rejected(info.error)
            try:
                commit()
            except BaseException:
                proc.kill()
                self._forget(entry)
                raise
            entries[name] = dataclasses.replace(entry, stamp=catalog.files_stamp(self.models_dir, name))
            self.registry.accept(name)
            _, plans = self.registry.resolve(entries, overrides)   # the active number, now that it is live
            self._swap(entries, proc, reason, plans)
            return info

    def rollout(self, name: str, override: dict, commit, reason: str) -> rollout.Plan:
        """Serve `name` with canary/shadow `override` if the versions it needs load beside the
        served set; `commit()` (called only then) writes it to the versions store. Returns the
        new plan; raises Rejected (a version did not load: R's message) with nothing changed."""
        with self._lock:
            registry = self.registry
            extras, plans = registry.resolve(registry.entries, {name: override})
            plan = plans[name]
            if plan.errors:
                raise Rejected("; ".join(plan.errors))
            entries = {**registry.entries, **extras}
            new = [n for n in extras if n not in registry.extras]
            if not new:        # nothing to load: the plan changes, workers drop unused versions later
                commit()
                registry.set_plans(plans)
                return plan
            proc = self._start_candidate(entries)
            infos = {m.name: m for m in proc.ready.models}
            failed = [n for n in new if not infos[n].ok]
            if failed:
                proc.kill()
                for n in failed:
                    self._forget(extras[n])
                raise Rejected("; ".join(f"version {n.partition('@')[2]}: {infos[n].error}" for n in failed))
            commit()
            self._swap(entries, proc, reason, plans)
            return plan

    def remove(self, name: str, retire, reason: str) -> dict:
        """`retire()` takes the model's files out of the folder; the reload then stops serving it."""
        with self._lock:
            retire()
            return self._reload(reason)

    def _reload(self, reason: str) -> dict:
        """Under the lock: scan, load what changed into new workers, and roll them in."""
        seen = fingerprint(self.models_dir)   # remembered once the reload went through
        registry = self.registry
        if not self.models_dir.is_dir():
            raise RuntimeError(f"the models folder {self.models_dir} is missing; nothing was reloaded")
        old_entries = registry.served()
        public = registry.scan()
        extras, plans = registry.resolve(public)
        new_entries = {**public, **extras}
        changed = sorted(n for n, e in new_entries.items()
                         if n not in old_entries or _spec_key(e) != _spec_key(old_entries[n]))
        removed = sorted(set(old_entries) - set(new_entries))
        if not changed and not removed:
            registry.set_plans(plans)
            self._seen = seen
            return {"changed": [], "removed": [], "rejected": {}, "reason": reason}
        log.info("reload (%s): changed %s, removed %s", reason, changed or "none", removed or "none")
        entries, ready = self._load_candidate(old_entries, new_entries, changed)
        rejected = {n: registry.rejected[n] for n in changed if n in registry.rejected}
        generation = self._swap(entries, ready, reason, plans)
        self._seen = seen
        if self.versions is not None:     # files dropped in by hand, or by another replica
            self.versions.adopt_served([n for n in changed if n not in rejected and not rollout.is_internal(n)])
        return {"changed": [n for n in changed if n not in rejected], "removed": removed,
                "rejected": rejected, "reason": reason, "generation": generation}

    def _forget(self, entry) -> None:
        """Remove the snapshot copy of an entry that will not be served."""
        snapshots = self.registry.snapshots
        folder = Path(entry.spec.rds).parent
        if snapshots is not None and snapshots in folder.parents:
            shutil.rmtree(folder, ignore_errors=True)

    def _start_candidate(self, entries):
        """A worker of the next generation holding `entries`, ready (RuntimeError if it cannot start)."""
        specs = [e.spec for e in entries.values() if e.spec is not None]
        proc = self.pool.new_process(0, specs, self.registry.generation + 1)
        error = await_ready(proc)
        if error is not None:
            proc.kill()
            raise RuntimeError(f"a worker with the new models could not start: {error}")
        return proc

    def _swap(self, entries, ready, reason: str, plans: dict | None = None) -> int:
        """Install the set the ready candidate holds and roll it into every slot."""
        generation = self.registry.install(entries, ready.ready.models, plans)
        self.pool.roll_over(ready)
        if self.registry.extras:
            self.pool.check_memory()
        log.info("%s: generation %s serving", reason, generation,
                 extra={"fields": {"event": "reload", "generation": generation}})
        return generation

    def _load_candidate(self, old_entries, new_entries, changed):
        """Start a worker with the new models; fall back to old versions of those that fail."""
        entries = dict(new_entries)
        while True:
            proc = self._start_candidate(entries)
            infos = {m.name: m for m in proc.ready.models}
            failed = [n for n in changed if entries[n].spec is None or not infos[n].ok]
            fallback = False
            for name in failed:
                why = entries[name].error if entries[name].spec is None else infos[name].error
                self.registry.reject(name, why)
                log.error("reload: model %s rejected, %s: %s", name,
                          "previous version keeps serving" if name in old_entries else "not served", why)
                if name in old_entries and old_entries[name].spec is not None \
                        and entries[name] is not old_entries[name]:
                    entries[name] = old_entries[name]
                    fallback = True
            for name in changed:
                if name not in failed:
                    self.registry.accept(name)
            if not fallback:
                return entries, proc
            proc.close()             # load again with the previous versions in place
            changed = [n for n in changed if n not in failed]


def _spec_key(entry) -> tuple:
    spec = entry.spec
    return (entry.stamp, spec.sha256 if spec else entry.error)
