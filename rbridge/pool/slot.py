"""One worker slot: a supervisor thread in the gateway that owns one worker process and its socket.

Threading: `Slot.run` is the slot's own thread and the only code that talks to its process.
It takes the oldest queued job for a model its process holds, merges other queued jobs for the
same model into one batch (micro-batching, only under load), sends it, and waits for the answer
until the earliest deadline. Other threads ask it for things (`hand_over` from the reloader)
through a queue; they never write its fields.

Lifecycle of the process it owns: starting (R loads every model) -> idle <-> busy -> draining
(being replaced: a successor is started first and takes over when Ready) -> dead. A worker that
dies fails or retries its jobs at once (never leaves them hanging) and is respawned with
backoff; one that outlives a deadline is killed (SIGTERM, then SIGKILL: R ignores SIGINT in
tight loops) and respawned; one that exits with EXIT_R_FAILED is not respawned after a few tries.
"""

from __future__ import annotations

import logging
import queue
import select
import signal
import threading
import time

from rbridge.errors import BridgeError, Timeout, Unavailable
from rbridge.pool import protocol, resources
from rbridge.pool.jobs import Job
from rbridge.pool.process import Process, await_ready, describe_exit

log = logging.getLogger("bridge.pool")

STATS_INTERVAL = 5.0      # seconds between memory polls of an idle worker
R_FAILED_LIMIT = 3        # EXIT_R_FAILED exits in a row before a slot gives up


class Slot:
    """One worker slot: a supervisor thread, its current process, and the figures /status shows."""

    def __init__(self, pool, index: int, first: Process | None = None):
        """`first`: a process already started (and Ready) for this slot, used before any new one."""
        self.pool, self.index = pool, index
        self._first = first
        self.proc: Process | None = None
        self.starting: Process | None = None
        self.successor: Process | None = None
        self.state = "starting"
        self.current: list[Job] = []
        self.busy_since: float | None = None
        self.served = self.restarts = self.r_failures = 0
        self.recycle_at = pool.recycle_after()
        self.stats: protocol.StatsReply | None = None
        self.stats_at = 0.0
        self.last_exit: str | None = None
        self._handovers: queue.SimpleQueue = queue.SimpleQueue()   # (process, done) from other threads
        self._handed: threading.Event | None = None                 # set when the successor took over
        self._holding: str | None = None    # the model this slot is scoring for (JobQueue.release)
        self.thread = threading.Thread(target=self.run, name=f"slot-{index}", daemon=True)

    def hand_over(self, proc: Process) -> threading.Event:
        """Replace this slot's process by `proc` (from another thread: the reloader).

        The slot thread makes the swap, as for a recycle: `proc` becomes the successor and takes
        over once Ready, the old process retiring after its current batch. The event is set when
        the swap is done (or the slot stopped).
        """
        done = threading.Event()
        self._handovers.put((proc, done))
        self.pool.queue.wake()
        return done

    # -- the supervisor loop ---------------------------------------------------------------
    def run(self) -> None:
        backoff = 0.1
        while not self.pool.stopping:
            if self.proc is None:
                started = self._start()
                self._let_go()      # a timed-out model held this slot until now
                if not started:
                    if self.state == "failed":
                        return
                    time.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                backoff = 0.1
            if self.successor is None and not self._handovers.empty():
                self.successor, self._handed = self._handovers.get()
                self.state = "draining"
            if self.successor is not None and self._successor_ready():
                continue
            job = self.pool.queue.take(0.05 if self.successor else STATS_INTERVAL, self.proc.loaded)
            if job is None:
                if self.proc and time.monotonic() - self.stats_at >= STATS_INTERVAL:
                    self._poll_stats()
                continue
            self._serve(job)
        self._let_go()
        if self.proc:
            self.proc.close()
            self.proc = None
        self._handed_over()
        while not self._handovers.empty():
            self._handovers.get()[1].set()
        self.state = "dead"

    def _serve(self, job: Job) -> None:
        """Score `job` with its batch mates; its model holds this slot (JobQueue's per-model
        limit) until the answer came or the worker died. A request that outlived its deadline
        holds it until the replacement has started: a slow model's respawns do not count as
        free workers for it."""
        self._holding = job.model
        try:
            if job.deadline <= time.monotonic():   # expired while queued: not worth a worker's life
                job.finish(error=Timeout(f"no worker was free within {job.timeout:g} s; the server is "
                                         "overloaded or the timeout is too short"))
            elif job.wanted not in (None, self.proc.loaded.get(job.model)):   # see JobQueue.take
                job.finish(error=Unavailable(
                    f"model '{job.model}' was replaced by another version while this request waited; "
                    "retry it", code="model_changed", headers={"Retry-After": "0"}))
            elif not (self.pool.stopping and job.done.is_set()):
                self._score([job] + self._batch_mates(job))
        finally:
            if self.proc is not None:
                self._let_go()

    def _let_go(self) -> None:
        """The model this slot scored for may take another worker."""
        if self._holding is not None:
            self.pool.queue.release(self._holding)
            self._holding = None

    def _handed_over(self) -> None:
        if self._handed is not None:
            self._handed.set()
            self._handed = None

    def _start(self) -> bool:
        """Start a process and wait for it to load every model; False if it failed."""
        self.state = "starting"
        proc, self._first = self._first or self.pool.new_process(self.index), None
        self.starting = proc             # Pool.stop kills it if the pool stops meanwhile
        ready = proc.ready is not None or self._await_ready(proc)
        self.starting = None
        if not ready:
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
        max_rows, wait_ms = self.pool.registry.batch_limits(job.model)
        if max_rows <= 1 or job.nrows >= max_rows or job.attempts:
            return []   # a retried job goes alone: if it crashes a worker again, only it fails
        # Waiting for more rows only pays under load: when requests are queued, or when there are
        # other workers and all of them are busy. Otherwise a request that arrives meanwhile is
        # taken by an idle worker (or there is none coming), and the wait is pure latency.
        others = [s for s in self.pool.slots if s is not self and s.proc]
        loaded = len(self.pool.queue) > 0 or (others and all(s.state == "busy" for s in others))
        return self.pool.queue.take_more(job, max_rows - job.nrows,
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
        self._let_go()
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
            self._handed_over()
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
        """Swap in the successor once it is ready; True if a swap (or failure) happened, or if
        this worker first scored a queued request that only it can: one encoded for the version
        it holds and its successor does not (no later worker would ever take it)."""
        succ = self.successor
        if succ.ready is None:
            if not select.select([succ.sock], [], [], 0)[0]:
                return False
            if await_ready(succ) is not None:
                self.successor = None
                log.error("worker %s: replacement failed to start (%s)", self.index, describe_exit(succ.kill()))
                self.state = "idle"
                self._handed_over()
                return True
        left = self.pool.queue.take_left_behind(self.proc.loaded, succ.loaded)
        if left is not None:
            self._serve(left)
            return True
        self.successor = None
        old, self.proc = self.proc, succ
        old.close()
        self.served, self.recycle_at = 0, self.pool.recycle_after()
        self.restarts += 1
        self.state, self.stats_at = "idle", 0.0
        self.pool.on_ready(self, succ)
        self.pool.metrics.restart(self.index, "recycle")
        self._handed_over()
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
