"""The pool: R worker processes, the queue in front of them, and their supervision.

Threading model. HTTP threads call `Pool.predict()`, which puts a `Job` on one bounded queue
(429 when full) and waits on the job's event. Each worker slot has one supervisor thread in
the gateway (`Slot.run`) that owns its process and socket: it takes the oldest job, merges other
queued jobs for the same model into one batch (micro-batching), sends it, and waits for the
answer until the earliest deadline. An idle worker pulls work, so dispatch is least-loaded by
construction. Nothing else talks to a worker's socket.

Lifecycle of a slot's process: starting (R loads every model) -> idle <-> busy -> draining (being
replaced: a successor is started first and takes over when Ready) -> dead. A worker that dies
fails or retries its jobs at once (never leaves them hanging) and is respawned with backoff;
one that outlives a deadline is killed (SIGTERM, then SIGKILL: R ignores SIGINT in tight loops)
and respawned; one that exits with EXIT_R_FAILED is not respawned after a few tries.
"""

from __future__ import annotations

import logging
import os
import random
import select
import signal
import threading
import time

from . import protocol, resources
from rbridge.models.catalog import Entry
from rbridge.errors import BridgeError, Timeout, Unavailable
from rbridge.pool.jobs import Job, JobQueue
from rbridge.pool.process import KILL_GRACE, Process, await_ready, describe_exit

log = logging.getLogger("bridge.pool")

STATS_INTERVAL = 5.0      # seconds between memory polls of an idle worker
R_FAILED_LIMIT = 3        # EXIT_R_FAILED exits in a row before a slot gives up
HEADROOM = 0.10           # fraction of the container's memory kept free when sizing the pool


class Slot:
    """One worker slot: a supervisor thread, its current process, and the figures /status shows."""

    def __init__(self, pool: "Pool", index: int):
        self.pool, self.index = pool, index
        self.proc: Process | None = None
        self.successor: Process | None = None
        self.state = "starting"
        self.current: list[Job] = []
        self.busy_since: float | None = None
        self.served = self.restarts = self.r_failures = 0
        self.recycle_at = pool.recycle_after()
        self.stats: protocol.StatsReply | None = None
        self.stats_at = 0.0
        self.last_exit: str | None = None
        self.thread = threading.Thread(target=self.run, name=f"slot-{index}", daemon=True)

    # -- the supervisor loop ---------------------------------------------------------------
    def run(self) -> None:
        backoff = 0.1
        while not self.pool.stopping:
            if self.proc is None:
                if not self._start():
                    if self.state == "failed":
                        return
                    time.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                backoff = 0.1
            if self.successor is not None and self._successor_ready():
                continue
            job = self.pool.queue.take(0.05 if self.successor else STATS_INTERVAL, self.proc.loaded)
            if job is None:
                if self.proc and time.monotonic() - self.stats_at >= STATS_INTERVAL:
                    self._poll_stats()
                continue
            if self.pool.stopping and job.done.is_set():
                continue
            self._score([job] + self._batch_mates(job))
        if self.proc:
            self.proc.close()
            self.proc = None
        self.state = "dead"

    def _start(self) -> bool:
        """Start a process and wait for it to load every model; False if it failed."""
        self.state = "starting"
        proc = self.pool.first_process.pop(self.index, None) or self.pool.new_process(self.index)
        if proc.ready is None and not self._await_ready(proc):
            return False
        self.proc = proc
        self.state = "idle"
        self.stats_at = 0.0
        self.pool.on_ready(self, proc)
        return True

    def _await_ready(self, proc: Process) -> bool:
        error = await_ready(proc)
        if error is None:
            self.r_failures = 0
            return True
        code = proc.kill()
        self.restarts += 1
        self.last_exit = describe_exit(code)
        log.error("worker %s failed to start: %s (%s)", self.index, self.last_exit, error)
        if code == protocol.EXIT_R_FAILED:
            self.r_failures += 1
            if self.r_failures >= R_FAILED_LIMIT:
                self.state = "failed"
                log.error("worker %s: R cannot start (%s tries); not respawning it",
                          self.index, self.r_failures)
        return False

    def _batch_mates(self, job: Job) -> list[Job]:
        max_rows, wait_ms = self.pool.batch_limits(job.model)
        if max_rows <= 1 or job.nrows >= max_rows or job.attempts:
            return []   # a retried job goes alone: if it crashes a worker again, only it fails
        # Waiting for more rows only pays under load: when requests are queued, or when there are
        # other workers and all of them are busy. Otherwise a request that arrives meanwhile is
        # taken by an idle worker (or there is none coming), and the wait is pure latency.
        others = [s for s in self.pool.slots if s is not self and s.proc]
        loaded = len(self.pool.queue) > 0 or (others and all(s.state == "busy" for s in others))
        return self.pool.queue.take_more(job.model, max_rows - job.nrows,
                                         wait_ms / 1000.0 if loaded else 0.0)

    def _score(self, jobs: list[Job]) -> None:
        live = [j for j in jobs if not j.done.is_set()]
        if not live:
            return
        proc = self.proc
        self.state, self.current, self.busy_since = "busy", live, time.monotonic()
        wait = self.pool.metrics.queue_wait.labels(live[0].model)
        for j in live:
            j.attempts += 1
            wait.observe(self.busy_since - j.queued_at)
        message = protocol.Score(live[0].id, live[0].model, [j.part for j in live])
        deadline = min(j.deadline for j in live)
        try:
            protocol.send(proc.sock, message)
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not select.select([proc.sock], [], [], remaining)[0]:
                    self._on_timeout(live)
                    return
                reply = protocol.recv(proc.sock)
                if isinstance(reply, protocol.Scored) and reply.batch_id == message.batch_id:
                    break
        except (EOFError, OSError):
            self._on_crash(live)
            return
        finally:
            self.current, self.busy_since = [], None
        version = self.pool.version_of(proc, live[0].model)
        for job, out in zip(live, reply.outputs):
            if isinstance(out, dict):
                job.finish(error=BridgeError.from_dict(out), slot=self.index, version=version)
            else:
                job.finish(out, slot=self.index, version=version)
        self.served += len(live)
        self.pool.metrics.batch(live[0].model, len(live), sum(j.nrows for j in live),
                                reply.r_seconds)
        self.state = "idle"
        self._maybe_recycle()

    def _on_timeout(self, jobs: list[Job]) -> None:
        now = time.monotonic()
        for job in jobs:
            if job.deadline <= now:
                job.finish(error=Timeout(
                    f"the model took longer than {job.timeout:g} s; the worker was stopped. "
                    "Send fewer rows, or raise the timeout (--timeout, or timeout in <model>.json)"))
            else:
                self.pool.retry_or_fail(job, "its worker was stopped for another request's timeout")
        log.warning("worker %s: request outlived its deadline; killing pid %s", self.index, self.proc.pid)
        self._replace(self.proc.kill(), "timeout")

    def _on_crash(self, jobs: list[Job]) -> None:
        code = self.proc.kill(grace=0.2)
        desc = describe_exit(code)
        for job in jobs:
            self.pool.retry_or_fail(job, f"the worker scoring it died ({desc})")
        hint = " (SIGKILL: memory may have run out)" if code == -signal.SIGKILL else ""
        log.error("worker %s (pid %s) died while busy: %s%s", self.index, self.proc.pid, desc, hint)
        self._replace(code, "crash")

    def _replace(self, code, reason: str) -> None:
        self.last_exit = f"{reason}: {describe_exit(code)}"
        self.restarts += 1
        self.pool.metrics.restart(self.index, reason)
        if self.successor is not None:   # a replacement was already on its way
            self.proc, self.successor = self.successor, None
            if self.proc.ready is None and not self._await_ready(self.proc):
                self.proc = None
            else:
                self.state = "idle"
                self.pool.on_ready(self, self.proc)
            return
        self.proc = None
        self.state = "starting"

    # -- recycling -------------------------------------------------------------------------
    def _maybe_recycle(self) -> None:
        if any(s.successor is not None for s in self.pool.slots):
            return   # one replacement at a time: memory is sized for one spare worker
        reason = None
        if self.recycle_at and self.served >= self.recycle_at:
            reason = f"served {self.served} requests (--max-requests)"
        elif self.pool.settings.max_worker_memory:
            rss = resources.process_memory(self.proc.pid, full=False)["rss"]
            if rss > self.pool.settings.max_worker_memory:
                reason = f"memory {rss >> 20} MiB passed --max-worker-memory"
        if reason:
            self.recycle(reason)

    def recycle(self, reason: str) -> None:
        """Start a successor now; it takes over when Ready, and the old process is retired."""
        log.info("worker %s: recycling (%s)", self.index, reason)
        self.state = "draining"
        self.successor = self.pool.new_process(self.index)

    def _successor_ready(self) -> bool:
        """Swap in the successor once it is ready; True if a swap (or failure) happened."""
        succ = self.successor
        if succ.ready is None and not select.select([succ.sock], [], [], 0)[0]:
            return False
        self.successor = None
        if succ.ready is None and await_ready(succ) is not None:
            log.error("worker %s: replacement failed to start (%s)", self.index, describe_exit(succ.kill()))
            self.state = "idle"
            return True
        old, self.proc = self.proc, succ
        old.close()
        self.served, self.recycle_at = 0, self.pool.recycle_after()
        self.restarts += 1
        self.state, self.stats_at = "idle", 0.0
        self.pool.on_ready(self, succ)
        self.pool.metrics.restart(self.index, "recycle")
        return True

    # -- figures ---------------------------------------------------------------------------
    def _poll_stats(self) -> None:
        proc = self.proc
        try:
            protocol.send(proc.sock, protocol.Stats())
            if not select.select([proc.sock], [], [], 10)[0]:
                raise EOFError("no answer to a stats poll in 10 s")
            reply = protocol.recv(proc.sock)
        except (EOFError, OSError):
            self._on_crash([])
            return
        self.stats, self.stats_at = reply, time.monotonic()

    def describe(self, full_memory: bool = True) -> dict:
        proc = self.proc
        out = {"slot": self.index, "state": self.state, "pid": proc.pid if proc else None,
               "requests_served": self.served, "restarts": self.restarts,
               "last_exit": self.last_exit, "current_request": None, "busy_seconds": None,
               "memory": None, "models": []}
        busy_since, current = self.busy_since, self.current
        if busy_since is not None and current:
            out["current_request"] = current[0].part.request_id
            out["busy_seconds"] = round(time.monotonic() - busy_since, 3)
        if proc and proc.popen.poll() is None:
            try:
                mem = resources.process_memory(proc.pid, full=full_memory)
            except Exception:  # the process went away between the check and the read
                mem = {}
            if self.stats:
                mem["r_heap"] = self.stats.r_heap_bytes
                mem["r_heap_max"] = self.stats.r_heap_max_bytes
            out["memory"] = mem
        if proc and proc.ready:
            out["models"] = [f"{m.name}@{m.version}" for m in proc.ready.models if m.ok]
        return out


class Pool:
    """Starts the slots, owns the queue, and answers the app's questions."""

    def __init__(self, settings, entries: dict[str, Entry], metrics):
        self.settings, self.entries, self.metrics = settings, entries, metrics
        self.specs = [e.spec for e in entries.values() if e.spec is not None]
        self.queue = JobQueue(settings.queue_size)
        self.slots: list[Slot] = []
        self.first_process: dict[int, Process] = {}
        self.infos: dict[str, protocol.ModelInfo] = {}
        self.generation = 0           # bumps when a reload installs a new set of models
        self.loaded_at: dict[str, float] = {}
        self.start_failures: set[str] = set()
        self.reloader = None          # reload.Reloader, set by the server
        self.snapshots = None         # folder of the model files the workers load (catalog.scan)
        self.size_reason = ""
        self.failed_reason = None
        self.draining = False         # SIGTERM seen: /readyz says 503, requests still served
        self.stopping = False
        self.started = False
        self._lock = threading.Lock()

    # -- start and stop --------------------------------------------------------------------
    def start(self) -> None:
        """Start one worker, size the pool from what it uses, then start the rest."""
        wanted, reason = self.effective_size()
        first = self.new_process(0)
        error = await_ready(first)
        if error is not None:
            code = first.kill()
            self.failed_reason = f"the first worker could not start: {describe_exit(code)} ({error})"
            log.error("pool: %s", self.failed_reason)
            raise RuntimeError(self.failed_reason)
        self.first_process[0] = first
        self._record_infos(first)
        self.start_failures = {n for n, e in self.entries.items()
                               if e.spec is None or not self.infos.get(n) or not self.infos[n].ok}
        fits, mem_reason = self.memory_fit(first.pid)
        if fits < wanted:
            wanted, reason = fits, mem_reason
            log.warning("pool: starting %s workers: %s", wanted, reason)
        self.size_reason = reason
        log.info("pool: %s worker(s) (%s)", wanted, reason,
                 extra={"fields": {"event": "pool_size", "workers": wanted}})
        self.slots = [Slot(self, i) for i in range(wanted)]
        for slot in self.slots:
            slot.thread.start()
        self.started = True

    def effective_size(self) -> tuple[int, str]:
        s = self.settings
        cores, where = resources.usable_cpus()
        cap = cores * s.workers_per_core
        if s.workers > cap:
            return cap, (f"--workers {s.workers} capped at {cap} = {where} x --workers-per-core "
                         f"{s.workers_per_core}")
        return s.workers, f"--workers {s.workers} ({where})"

    def memory_fit(self, pid: int) -> tuple[int, str]:
        """How many workers like `pid` (at its peak) fit in the memory this container may use."""
        peak = max(resources.peak_rss(pid), 1)
        mem = resources.container_memory()
        gateway = resources.process_memory(os.getpid(), full=False)["rss"]
        budget = mem["limit"] * (1 - HEADROOM) - gateway
        fits = max(1, int(budget // peak))
        return fits, (f"memory: each worker peaked at {peak >> 20} MiB after loading and warming "
                      f"every model; {mem['limit'] >> 20} MiB ({mem['source']}) less "
                      f"{int(HEADROOM * 100)}% headroom and the gateway's {gateway >> 20} MiB fits {fits}")

    def stop(self, timeout: float = 10.0) -> None:
        self.stopping = True
        self.queue.close()
        deadline = time.monotonic() + timeout
        for slot in self.slots:
            slot.thread.join(max(0.1, deadline - time.monotonic()))
        for slot in self.slots:
            for proc in (slot.proc, slot.successor):
                if proc and proc.popen.poll() is None:
                    proc.kill()
        for proc in self.first_process.values():
            proc.kill()
        while True:   # anything still queued will not be scored now
            job = self.queue.take(0)
            if job is None:
                break
            job.finish(error=Unavailable("the server shut down before scoring this request; retry it"))

    # -- requests --------------------------------------------------------------------------
    def predict(self, model: str, part: protocol.Part, timeout: float) -> Job:
        """Queue a part and wait for its result; returns the finished job or raises BridgeError."""
        if self.stopping:
            raise Unavailable("the server is shutting down; retry on another replica",
                              headers={"Retry-After": "1"})
        if self.failed_reason or (self.started and all(s.state == "failed" for s in self.slots)):
            raise Unavailable("no R worker can run: " + (self.failed_reason or "R cannot start")
                              + " (see /readyz and the server log)", headers={"Retry-After": "5"})
        job = Job(model, part, timeout)
        self.queue.put(job)
        if not job.done.wait(timeout):
            if self.queue.remove(job):
                job.finish(error=Timeout(f"no worker was free within {timeout:g} s; the server is "
                                         "overloaded or the timeout is too short"))
            job.done.wait(KILL_GRACE + 5)   # in flight: its slot finishes it at the deadline
        if not job.done.is_set():
            job.finish(error=Timeout(f"the request took longer than {timeout:g} s"))
        if job.error is not None:
            raise job.error
        return job

    def retry_or_fail(self, job: Job, why: str) -> None:
        if self.settings.retry_on_crash and job.attempts < 2 and not self.stopping \
                and job.deadline > time.monotonic():
            log.info("retrying request %s on another worker: %s", job.part.request_id, why)
            self.queue.put(job, front=True)
        else:
            job.finish(error=Unavailable(f"{why}; the request was not completed. Retry it "
                                         "(predictions are idempotent)"))

    def batch_limits(self, model: str) -> tuple[int, float]:
        entry = self.entries.get(model)
        rows = entry.batch_max_rows if entry and entry.batch_max_rows is not None else self.settings.max_batch_rows
        wait = entry.batch_max_wait_ms if entry and entry.batch_max_wait_ms is not None \
            else self.settings.max_batch_wait_ms
        return int(rows), float(wait)

    def timeout_for(self, model: str) -> float:
        entry = self.entries.get(model)
        return float(entry.timeout) if entry and entry.timeout else self.settings.timeout

    def recycle_after(self) -> int:
        s = self.settings
        if not s.max_requests:
            return 0
        return s.max_requests + (random.randint(0, s.max_requests_jitter) if s.max_requests_jitter else 0)

    # -- state -----------------------------------------------------------------------------
    def new_process(self, slot: int) -> Process:
        return Process(slot, self.settings, self.specs, self.generation)

    def on_ready(self, slot: Slot, proc: Process) -> None:
        self._record_infos(proc)
        log.info("worker %s ready (pid %s, %.2f s)", slot.index, proc.pid, time.monotonic() - proc.started,
                 extra={"fields": {"event": "worker_ready", "slot": slot.index, "pid": proc.pid}})

    def _record_infos(self, proc: Process) -> None:
        """What the current generation's workers say about each model (older ones are ignored)."""
        with self._lock:
            if proc.generation != self.generation:
                return
            for info in proc.ready.models:
                if info.name not in self.infos or self.infos[info.name].version != info.version:
                    self.loaded_at[info.name] = time.time()
                self.infos[info.name] = info

    def version_of(self, proc: Process, model: str) -> str:
        for info in proc.ready.models:
            if info.name == model:
                return info.version
        return ""

    def ready(self) -> tuple[bool, str]:
        if self.draining or self.stopping:
            return False, "draining: the server is shutting down"
        if self.failed_reason:
            return False, self.failed_reason
        if not self.started:
            return False, "starting: workers are loading models"
        if not any(s.proc is not None for s in self.slots):
            return False, "no live worker"
        # Only models that failed at start count: a failed reload keeps the old version serving.
        failed = sorted(n for n in self.start_failures if n in self.entries and
                        (self.entries[n].spec is None or not self.infos.get(n) or not self.infos[n].ok))
        if failed:
            return False, f"model(s) failed to load: {', '.join(failed)}"
        return True, "ready"

    def status(self) -> dict:
        return {"workers": [s.describe() for s in self.slots],
                "queue_depth": len(self.queue), "queue_size": self.queue.size,
                "effective_size": len(self.slots), "size_reason": self.size_reason,
                "container_memory": resources.container_memory()}
