"""Which version of a model answers a request, and what happens after the answer.

`Traffic.choose` picks the model the pool scores (rbridge/models/rollout.py has the plans):
  - a pinned version (the X-Model-Version request header, or POST /models/<name>/versions/<v>/predict):
    a number from GET /models/<name>/versions, or the version string answers carry; 404 for a
    version that is not retained, 409 for one retained but not loaded (make it the canary, at
    0% if need be, or the shadow), 422 for one that failed to load (R's message);
  - else the canary's share: `percent` of requests at random, or with "sticky": true by a hash of
    the caller (user name: an API key acts as its user), so each caller keeps one version while
    the percent stays; a canary that failed to load takes no traffic;
  - else the active version.
`after` counts the answer's predictions for its version, captures it (capture.py) and offers the
shadow scoring.

Shadow scoring (`Shadows`): after the caller has its answer, a copy is scored on the shadow
version by one background thread, through the same pool, and the two answers compared (numbers
within the shadow's tolerance, relative or absolute, NA equal to NA; labels exactly). It never
delays or fails the caller: it is dropped (counted, rbridge_shadow_dropped) when no worker is idle,
when the queue of copies (SHADOW_QUEUE) is full, and one copy at most is scored at a time, so it
holds one worker at most. The copy is encoded by the shadow version's own schema from the body.

Runs in the gateway process: HTTP threads call choose/after; one daemon thread scores shadows.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import random
import threading

import numpy as np

from rbridge.errors import BridgeError, Conflict, InvalidInput, NotFound, Unavailable
from rbridge.gateway.capture import Captures
from rbridge.models import rollout
from rbridge.pool import protocol

log = logging.getLogger("bridge.rollout")
SHADOW_QUEUE = 16


class Traffic:
    def __init__(self, registry, pool, captures: Captures):
        self.registry, self.pool, self.captures = registry, pool, captures
        self.shadows = Shadows(registry, pool)

    def choose(self, name: str, user: str | None, pin: str | None) -> str:
        """The model the pool scores for this request: `name` or one of its extra versions."""
        plan = self.registry.plan(name)
        if pin is not None:
            return self._pinned(name, plan, pin.strip())
        if plan is None or plan.canary is None or plan.canary.percent <= 0 or plan.canary.target == name:
            return name
        canary = plan.canary
        info = self.registry.info(canary.target)
        if info is None or not info.ok:
            return name
        draw = _share(name, user) if canary.sticky and user else random.random()
        return canary.target if draw * 100.0 < canary.percent else name

    def serves(self, name: str, version: str) -> bool:
        """Whether a loaded version of `name` (the active one or a rollout's) answers as `version`."""
        plan = self.registry.plan(name)
        targets = [name, *(plan.loaded.values() if plan else ())]
        return any((i := self.registry.info(t)) is not None and i.version == version for t in targets)

    def _pinned(self, name: str, plan, pin: str) -> str:
        """The loaded version whose version string is `pin`, else retained version number `pin`."""
        registry = self.registry
        targets = [name, *(plan.loaded.values() if plan else ())]
        target = next((t for t in targets if (i := registry.info(t)) is not None and i.version == pin), None)
        if target is None and pin.isdigit():
            number = int(pin)
            target = plan.loaded.get(number) if plan else None
            if target is None:
                retained = registry.versions.list(name) if registry.versions is not None else []
                if not any(m["version"] == number for m in retained):
                    raise NotFound(f"model '{name}' has no version {number} (GET /models/{name}/versions "
                                   "lists those retained)", code="unknown_version")
                raise Conflict(f"version {number} of model '{name}' is retained but not loaded: make it the "
                               f"canary (percent 0 for none of the traffic) or the shadow with POST "
                               f"/models/{name}/rollout to score it", code="version_not_loaded")
        elif target is None:
            active = registry.info(name)
            raise NotFound(f"model '{name}' serves no version '{pin}' (it serves "
                           f"'{active.version if active else '?'}'; or pin a number from GET "
                           f"/models/{name}/versions)", code="unknown_version")
        info = registry.info(target)
        if target != name and info is None:
            raise Unavailable(f"version {pin} of model '{name}' is still loading; retry shortly",
                              code="model_not_loaded", headers={"Retry-After": "1"})
        if target != name and not info.ok:
            raise InvalidInput(f"version {pin} of model '{name}' failed to load: {info.error}",
                               code="version_failed")
        return target

    def after(self, name: str, target: str, job, read, request_id: str, body=None, predictions=None) -> None:
        """The caller is answered: count the predictions, capture, offer the shadow scoring.
        `body`/`predictions` (the parsed request and the answer's predictions) when capturable."""
        self.pool.metrics.predictions.observe(name, job.version, job.output)
        plan = self.registry.plan(name)
        if plan is None:
            return
        if plan.capture is not None and body is not None:
            self.captures.offer(name, plan.capture, job.version or "", request_id, body, predictions)
        shadow = plan.shadow          # the routes that capture (body given) are the ones shadowed
        if shadow is not None and body is not None and target == name and shadow.target != name:
            self.shadows.offer(name, shadow, read, job, request_id)


def _share(name: str, user: str) -> float:
    """A caller's fixed place in [0, 1) for `name` (sha256 of model and user)."""
    digest = hashlib.sha256(f"{name}\0{user}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64


class Shadows:
    def __init__(self, registry, pool):
        self.registry, self.pool = registry, pool
        self._queue: queue.Queue = queue.Queue(SHADOW_QUEUE)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def offer(self, name: str, route: rollout.Route, read, job, request_id: str) -> None:
        dropped = self.pool.metrics.shadow_dropped
        if not self.pool.has_idle_worker():
            dropped.labels(name, "busy").inc()
            return
        try:
            self._queue.put_nowait((name, route, read, job.output, request_id))
        except queue.Full:
            dropped.labels(name, "queue_full").inc()
            return
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="shadow-scoring", daemon=True)
                    self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                self._score(*item)
            except Exception:
                log.exception("shadow scoring failed")

    def _score(self, name: str, route: rollout.Route, read, answer, request_id: str) -> None:
        metrics = self.pool.metrics
        info = self.registry.info(route.target)
        version = info.version if info is not None else str(route.number)
        if not self.pool.has_idle_worker():            # the load came while it waited
            metrics.shadow_dropped.labels(name, "busy").inc()
            return
        try:
            if info is None or not info.ok:
                raise BridgeError(f"the shadow version is not loaded: {info.error if info else 'missing'}")
            columns, nrows = read(info, self.registry.schema(info))
            job = self.pool.predict(route.target, protocol.Part(f"{request_id}-shadow", nrows, columns),
                                    self.registry.timeout_for(name), self.registry.encoding(info))
        except BridgeError as exc:
            metrics.shadow.labels(name, version, "error").inc()
            log.info("shadow scoring of %s on version %s failed: %s", name, route.number, exc.message)
            return
        differing = disagreeing_rows(answer, job.output, route.tolerance)
        metrics.shadow.labels(name, version, "disagree" if differing else "agree").inc()
        if differing:
            metrics.shadow_rows.labels(name, version).inc(differing)


def disagreeing_rows(a: protocol.Output, b: protocol.Output, tolerance: float) -> int:
    """Rows whose predictions differ: numbers beyond `tolerance` (relative, or absolute near
    zero; NA equals NA), anything else unless equal. Answers of other shapes differ in every row."""
    rows = len(a.values[0]) if a.values else 0
    if a.kind != b.kind or a.names != b.names or len(a.values) != len(b.values):
        return rows
    differ = np.zeros(rows, dtype=bool)
    for x, y in zip(a.values, b.values):
        if len(x) != rows or len(y) != rows:
            return rows
        xa, ya = np.asarray(x), np.asarray(y)
        if xa.dtype.kind in "fiu" and ya.dtype.kind in "fiu":
            differ |= ~np.isclose(xa.astype(float), ya.astype(float), rtol=tolerance, atol=tolerance,
                                  equal_nan=True)
        else:
            differ |= np.array([u != v for u, v in zip(list(x), list(y))], dtype=bool)
    return int(differ.sum())
