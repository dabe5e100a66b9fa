"""The registry: the one owner of the served models' state.

What it holds: the catalogue entries (what the models folder says: files, versions, per-model
settings), the generation (bumped by each reload that installs a new set), what the current
generation's workers reported for each model (`ModelInfo`: loaded or failed, class, schema),
when each version was first loaded, and why a reload refused a model's newer files; and each
model's rollout (rbridge/models/rollout.py): the retained versions loaded beside the active one
under internal names (`extras`, e.g. `cars@3`: loaded by the workers, never listed or routed
by name) and the `Plan` a request reads to choose between them.

Built once by the server, before anything else that needs it, and handed to the pool (which
records what its workers report), the reloader (which installs new sets) and the app (which
reads and describes). Nothing else writes model state.

Threading: slot threads call `record`, the reloader thread `install`/`reject`/`accept`, HTTP
threads read. Writes hold one lock; the dicts readers see are replaced whole on `install`, so
a reader never sees half of a set.
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import dataclasses
import logging

from rbridge.models import catalog, rollout
from rbridge.models.catalog import Entry
from rbridge.pool.protocol import ModelInfo, ModelSpec, encoding_key
from rbridge.schema import Schema

log = logging.getLogger("bridge.rollout")

class Registry:
    def __init__(self, settings, snapshots: Path | None = None, entries: dict[str, Entry] | None = None,
                 versions=None):
        """`entries` default to a scan of settings.models (copied to `snapshots`, see catalog.scan).
        `versions` (a VersionStore): the models found are recorded as versions, and the canary
        and shadow versions their rollouts name are loaded beside them (none without a store)."""
        self.models_dir = settings.models
        self.snapshots = snapshots
        self._timeout, self._default_name = settings.timeout, settings.default_model
        self._allow_empty = settings.allow_empty
        self._warmup_timeout = settings.warmup_timeout
        self._batch = (settings.max_batch_rows, settings.max_batch_wait_ms)
        self.entries: dict[str, Entry] = catalog.scan(self.models_dir, snapshots) if entries is None else entries
        self.generation = 0
        self.infos: dict[str, ModelInfo] = {}
        self.loaded_at: dict[str, float] = {}
        self.rejected: dict[str, str] = {}        # model -> why its latest files were refused
        self.start_failures: frozenset[str] = frozenset()
        self._schemas: dict[tuple, Schema] = {}
        self._encodings: dict[tuple, str] = {}
        self._lock = threading.Lock()
        self.versions = versions
        self.extras: dict[str, Entry] = {}           # name@n -> a retained version loaded beside name
        self.plans: dict[str, rollout.Plan] = {}
        if versions is not None:
            versions.adopt_served([n for n, e in self.entries.items() if e.spec is not None])
            self.extras, self.plans = self.resolve(self.entries)

    # -- reading -----------------------------------------------------------------------------
    def names(self) -> list[str]:
        return sorted(self.entries)

    def specs(self) -> list[ModelSpec]:
        """What a new worker loads: every model, but a version whose warm-up outran its limit
        (a respawned worker would only spend that time again before failing it)."""
        return [e.spec for e in (*self.entries.values(), *self.extras.values())
                if e.spec is not None and not self._warmup_timed_out(e.spec)]

    def served(self) -> dict[str, Entry]:
        """Every entry the workers load: the models and their extra versions (name@n)."""
        return {**self.entries, **self.extras}

    def plan(self, name: str) -> rollout.Plan | None:
        return self.plans.get(name)

    def _warmup_timed_out(self, spec: ModelSpec) -> bool:
        info = self.infos.get(spec.name)
        return info is not None and info.version == spec.version and info.warmup_timed_out

    def info(self, name: str) -> ModelInfo | None:
        return self.infos.get(name)

    @property
    def default(self) -> str | None:
        """The model POST /predict scores: --default-model, or the only one served."""
        if self._default_name:
            return self._default_name
        return next(iter(self.entries)) if len(self.entries) == 1 else None

    def schema(self, info: ModelInfo) -> Schema:
        key = (info.name, info.version)
        schema = self._schemas.get(key)
        if schema is None:
            schema = self._schemas[key] = Schema(info.schema, extra_ok=info.kind == "r")
        return schema

    def encoding(self, info: ModelInfo) -> str:
        """protocol.encoding_key of a version: which workers can score the parts its schema reads."""
        key = (info.name, info.version)
        found = self._encodings.get(key)
        if found is None:
            found = self._encodings[key] = encoding_key(info)
        return found

    def _entry(self, name: str) -> Entry | None:
        """The model's entry; for an extra version (name@n) the served model's, whose
        settings (timeout, batching, concurrency) it shares."""
        entry = self.entries.get(name)
        return entry if entry is not None or not rollout.is_internal(name) else \
            self.entries.get(name.partition("@")[0])

    def timeout_for(self, name: str) -> float:
        entry = self._entry(name)
        return float(entry.timeout) if entry and entry.timeout else self._timeout

    def image_config(self, name: str) -> dict | None:
        """The "image" block of <name>.json (with its defaults), or None for a model of rows."""
        entry = self.entries.get(name)
        return entry.spec.image if entry and entry.spec else None

    def max_concurrency(self, name: str) -> int | None:
        """max_concurrency from <name>.json: workers the model may hold at once (None: not set)."""
        entry = self._entry(name)
        return entry.max_concurrency if entry else None

    def top_k(self, name: str) -> int | None:
        """top_k from <name>.json: answer each row's k best classes (None: the model's own answer)."""
        entry = self.entries.get(name)
        return entry.spec.top_k if entry and entry.spec else None

    def warmup_timeout(self, name: str) -> float:
        """Seconds a model's warm-up may take: --warmup-timeout, else the model's timeout."""
        return self._warmup_timeout or self.timeout_for(name)

    def batch_limits(self, name: str) -> tuple[int, float]:
        entry = self._entry(name)
        rows = entry.batch_max_rows if entry and entry.batch_max_rows is not None else self._batch[0]
        wait = entry.batch_max_wait_ms if entry and entry.batch_max_wait_ms is not None else self._batch[1]
        return int(rows), float(wait)

    def failed_at_start(self) -> list[str]:
        """Models that failed when the pool started and still do (a failed reload keeps the old one)."""
        return sorted(n for n in self.start_failures if n in self.entries and not self._ok(n))

    def readiness_problem(self) -> str | None:
        """Why the models folder makes this replica unready, or None. A folder that is gone
        (deleted, unmounted) keeps its models answering, so that the replica can drain."""
        if not self.models_dir.is_dir():
            return (f"the models folder {self.models_dir} is missing (deleted or unmounted?); "
                    "the models loaded before keep answering until it is back")
        if not self.entries and not self._allow_empty:
            return (f"no models in {self.models_dir}: add <name>.rds files, or start with "
                    "--allow-empty for a server filled by publishing")
        return None

    def unreadable(self) -> list[str]:
        """Models whose files could not be read at the last scan (the watcher tries again)."""
        return sorted(n for n, e in self.entries.items() if e.unreadable)

    def _ok(self, name: str) -> bool:
        info = self.infos.get(name)
        return self.entries[name].spec is not None and info is not None and info.ok

    def describe(self, name: str, full: bool = False) -> dict:
        """A model as GET /models and GET /models/<name> show it."""
        entry, info = self.entries[name], self.infos.get(name)
        if entry.spec is None:
            state, error = "failed", entry.error
        elif info is None:
            state, error = "loading", None
        else:
            state, error = ("loaded", None) if info.ok else ("failed", info.error)
        out = {"name": name, "version": entry.spec.version if entry.spec else None, "state": state,
               "error": error, "kind": entry.spec.kind if entry.spec else None,
               "r_class": info.r_class if info else None}
        if name in self.rejected:
            out["reload_error"] = self.rejected[name]   # newer files refused; this version serves
        if full:
            spec = entry.spec
            out.update({
                "description": entry.description, "sha256": spec.sha256 if spec else None,
                "size": entry.size, "packages": info.packages if info else None,
                "scoring": f"score() in {name}.R" if spec and spec.script else "default",
                "predict_args": spec.predict_args if spec else None,
                "top_k": spec.top_k if spec else None,
                "image": spec.image if spec else None,
                "timeout": self.timeout_for(name),
                "load_seconds": round(info.load_seconds, 3) if info else None,
                "loaded_at": _iso(self.loaded_at.get(name)),
                "schema": {"columns": info.schema if info else None,
                           "source": info.schema_source if info else None},
                "output": {"levels": info.output_levels if info else None}})
        return out

    # -- writing -----------------------------------------------------------------------------
    def record(self, generation: int, models: list[ModelInfo]) -> None:
        """What a worker of `generation` reported at Ready; reports of older generations are ignored."""
        with self._lock:
            if generation != self.generation:
                return
            for info in models:
                if info.name not in self.infos or self.infos[info.name].version != info.version:
                    self.loaded_at[info.name] = time.time()
                self.infos[info.name] = info

    def mark_started(self) -> None:
        """The first worker is ready: remember which models failed at start (readiness says so)."""
        with self._lock:
            self.start_failures = frozenset(n for n in self.entries if not self._ok(n))

    def scan(self) -> dict[str, Entry]:
        """The models folder now; unchanged models keep their entries (and snapshots)."""
        return catalog.scan(self.models_dir, self.snapshots, previous=self.entries)

    def install(self, entries: dict[str, Entry], models: list[ModelInfo], plans: dict | None = None) -> int:
        """Serve a new set of models from now on, as a worker that loaded them reported them
        (`models`); returns the new generation. Readers see the old set or the new, never none.
        `entries` holds the extra versions too (name@n; see `served`); `plans` their rollouts."""
        now = time.time()
        with self._lock:
            old, old_infos = self.served(), self.infos
            self.generation += 1
            self.entries = {n: e for n, e in entries.items() if not rollout.is_internal(n)}
            self.extras = {n: e for n, e in entries.items() if rollout.is_internal(n)}
            if plans is not None:
                self.plans = plans
            self.infos = {m.name: m for m in models}
            for m in models:
                if m.name not in old_infos or old_infos[m.name].version != m.version:
                    self.loaded_at[m.name] = now
        self._prune(old, entries)
        return self.generation

    def set_plans(self, plans: dict) -> None:
        """New rollouts that load nothing new (a canary's percent changed, a canary cleared
        whose version stays loaded until the next reload)."""
        self.plans = plans

    def resolve(self, entries: dict[str, Entry], overrides: dict | None = None) -> tuple[dict, dict]:
        """(extras, plans) for a set of models: each model's canary and shadow (the versions
        store's rollout.json, else <name>.json; `overrides` name -> {"canary", "shadow"} wins
        over both, for a rollout being tried out) and the retained versions they need loaded.
        An extra already loaded is reused (a version's files never change); one that is not
        retained any more is left out, with the reason in the plan."""
        extras, plans = {}, {}
        if self.versions is None:
            return extras, plans
        known = {**self.extras, **{n: e for n, e in entries.items() if rollout.is_internal(n)}}
        for name, entry in entries.items():
            if entry.spec is None or rollout.is_internal(name):
                continue
            override = (overrides or {}).get(name) or rollout.read_override(self.versions.root, name)
            errors = [override["error"]] if override and override.get("error") else []
            source = "rollout API" if override else ("<name>.json" if entry.canary or entry.shadow else "none")
            canary = override["canary"] if override else entry.canary
            shadow = override["shadow"] if override else entry.shadow
            retained = self.versions.list(name)
            active = next((m["version"] for m in reversed(retained) if m["active"]), None)
            if active is None:           # not in the folder yet (a publish being tried): by its .rds
                active = next((m["version"] for m in reversed(retained)
                               if m["sha256"] == entry.spec.sha256), None)
            loaded, routes = {active: name} if active is not None else {}, {}
            for kind, config in (("canary", canary), ("shadow", shadow)):
                if config is None:
                    continue
                number = config["version"]
                if number not in loaded:
                    extra = self._extra(name, number, known)
                    if isinstance(extra, str):
                        errors.append(f"{kind}: {extra}")
                        continue
                    extras[extra.name] = extra
                    loaded[number] = extra.name
                routes[kind] = rollout.Route(number, loaded[number], percent=config.get("percent", 0.0),
                                             sticky=config.get("sticky", False),
                                             tolerance=config.get("tolerance", rollout.DEFAULT_TOLERANCE))
            for why in errors:
                log.warning("model %s: %s", name, why)
            plans[name] = rollout.Plan(active, routes.get("canary"), routes.get("shadow"), entry.capture,
                                       {n: t for n, t in loaded.items() if n is not None}, source, tuple(errors))
        return extras, plans

    def _extra(self, name: str, number: int, known: dict) -> Entry | str:
        """The entry of version `number` of `name` loaded as name@number (`known` ones reused),
        or why it cannot be."""
        key = rollout.internal(name, number)
        if key in known:
            return known[key]
        folder = self.versions.folder(name, number)
        if folder is None:
            return f"model '{name}' has no version {number} (GET /models/{name}/versions lists those retained)"
        entry = catalog.read_entry(folder, name, self.snapshots)
        if entry.spec is None:
            return f"version {number}: {entry.error}"
        known[key] = dataclasses.replace(entry, name=key, spec=dataclasses.replace(entry.spec, name=key))
        return known[key]

    def reject(self, name: str, why: str) -> None:
        with self._lock:
            self.rejected[name] = why

    def accept(self, name: str) -> None:
        with self._lock:
            self.rejected.pop(name, None)

    def _prune(self, old: dict[str, Entry], new: dict[str, Entry]) -> None:
        """Drop snapshot copies of versions no longer served (workers that load them have retired)."""
        if self.snapshots is None:
            return
        in_use = {id(e) for e in new.values()}
        for entry in old.values():
            if id(entry) not in in_use and entry.spec is not None:
                folder = Path(entry.spec.rds).parent
                if self.snapshots in folder.parents:
                    shutil.rmtree(folder, ignore_errors=True)


def _iso(ts: float | None) -> str | None:
    return None if ts is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
