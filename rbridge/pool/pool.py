"""The pool: worker slots, the queue in front of them, sizing, and what the app asks of them.

Threading model. HTTP threads call `Pool.predict()`, which puts a `Job` on one bounded queue
(429 when full) and waits on the job's event. Each slot (slot.py) has one supervisor thread
that owns its worker process; an idle slot pulls the oldest job for a model its process holds,
so dispatch is least-loaded by construction. The reloader thread asks for `roll_over`; the
server's main thread for `start`, `drain` and `stop`. Model state (which models, versions,
what workers reported) belongs to the registry (rbridge/models/registry.py): the pool records
into it and reads from it.
"""

from __future__ import annotations

import logging
import os
import random
import time

from rbridge.errors import Timeout, Unavailable
from rbridge.models.registry import Registry
from rbridge.pool import protocol, resources
from rbridge.pool.jobs import Job, JobQueue
from rbridge.pool.process import KILL_GRACE, Process, await_ready, describe_exit
from rbridge.pool.slot import Slot

log = logging.getLogger("bridge.pool")

HEADROOM = 0.10           # fraction of the container's memory kept free when sizing the pool


class RCannotStart(RuntimeError):
    """The first worker answered StartFailed: R cannot start, so no worker ever will."""


class Pool:
    """Starts the slots, owns the queue, and answers the app's questions."""

    def __init__(self, settings, registry: Registry, metrics, failed_reason: str | None = None):
        """`failed_reason`: why no worker may start at all (a failed model fetch); /readyz says it."""
        self.settings, self.registry, self.metrics = settings, registry, metrics
        self.queue = JobQueue(settings.queue_size, self.concurrency_limit)
        self.slots: list[Slot] = []
        self.size_reason = ""
        self.failed_reason = failed_reason
        self.draining = False         # SIGTERM seen: /readyz says 503, requests still served
        self.stopping = False
        self.started = False

    # -- start and stop --------------------------------------------------------------------
    def start(self) -> None:
        """Start one worker, size the pool from what it uses, then start the rest."""
        wanted, reason = self.effective_size()
        first = self.new_process(0)
        error = await_ready(first)
        if error is not None:
            code = first.kill()
            self.failed_reason = f"the first worker could not start: {describe_exit(code)} ({error})"
            if first.start_failed is not None:   # the caller says it, once
                raise RCannotStart(f"R cannot start, so no model can be served: {error}")
            log.error("pool: %s", self.failed_reason)
            raise RuntimeError(self.failed_reason)
        self.registry.record(first.generation, first.ready.models)
        self.registry.mark_started()
        self._refuse_memory_below(first)
        fits, mem_reason = self.memory_fit(first.pid)
        if fits < wanted:
            wanted, reason = fits, mem_reason
            log.warning("pool: starting %s workers: %s", wanted, reason)
        self.size_reason = reason
        log.info("pool: %s worker(s) (%s)", wanted, reason,
                 extra={"fields": {"event": "pool_size", "workers": wanted}})
        if self.registry.extras:
            log.info("pool: each worker holds the rollout version(s) %s beside the models (memory counted)",
                     ", ".join(sorted(self.registry.extras)))
        self.slots = [Slot(self, i, first if i == 0 else None) for i in range(wanted)]
        for slot in self.slots:
            slot.thread.start()
        self.started = True

    def _refuse_memory_below(self, fresh: Process) -> None:
        """--max-worker-memory below what a fresh worker holds would recycle on every request."""
        limit = self.settings.max_worker_memory
        if not limit:
            return
        rss = resources.process_memory(fresh.pid, full=False)["rss"]
        if rss >= limit:
            fresh.kill()
            self.failed_reason = (f"--max-worker-memory {limit >> 20} MiB is below a fresh worker's "
                                  f"{rss >> 20} MiB (R and every model loaded): every request would "
                                  "recycle its worker. Raise it above that, or leave it unset")
            log.error("pool: %s", self.failed_reason)
            raise RuntimeError(self.failed_reason)

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
        extras = sorted(self.registry.extras)     # versions loaded for rollouts (models/rollout.py)
        held = f"every model and the {len(extras)} rollout version(s) {', '.join(extras)}" if extras else "every model"
        return fits, (f"memory: each worker peaked at {peak >> 20} MiB after loading and warming "
                      f"{held}; {mem['limit'] >> 20} MiB ({mem['source']}) less "
                      f"{int(HEADROOM * 100)}% headroom and the gateway's {gateway >> 20} MiB fits {fits}")

    def drain(self) -> None:
        """SIGTERM: /readyz answers 503 from now on; requests are still served."""
        self.draining = True

    def stop(self, timeout: float = 10.0) -> None:
        self.stopping = True
        self.queue.close()
        deadline = time.monotonic() + timeout
        for slot in self.slots:
            slot.thread.join(max(0.1, deadline - time.monotonic()))
        for slot in self.slots:
            for proc in (slot.proc, slot.successor, slot.starting):
                if proc and proc.popen.poll() is None:
                    proc.kill()
        for job in self.queue.drain():   # anything still queued will not be scored now
            job.finish(error=Unavailable("the server shut down before scoring this request; retry it"))

    # -- requests --------------------------------------------------------------------------
    def predict(self, model: str, part: protocol.Part, timeout: float, encoding: str | None = None) -> Job:
        """Queue a part (encoded as `encoding`, protocol.encoding_key of the model version whose
        schema read it) and wait for its result; returns the finished job or raises BridgeError."""
        if self.stopping:
            raise Unavailable("the server is shutting down; retry on another replica",
                              headers={"Retry-After": "1"})
        if self.failed_reason or (self.started and all(s.state == "failed" for s in self.slots)):
            raise Unavailable("no R worker can run: " + (self.failed_reason or "R cannot start")
                              + " (see /readyz and the server log)", headers={"Retry-After": "5"})
        job = Job(model, part, timeout, encoding)
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

    def recycle_after(self) -> int:
        s = self.settings
        if not s.max_requests:
            return 0
        return s.max_requests + (random.randint(0, s.max_requests_jitter) if s.max_requests_jitter else 0)

    # -- state -----------------------------------------------------------------------------
    def new_process(self, slot: int, specs: list | None = None, generation: int | None = None) -> Process:
        """A worker for the registry's current models (or for `specs` of a coming `generation`)."""
        reg = self.registry
        specs = reg.specs() if specs is None else specs
        return Process(slot, self.settings, specs, reg.generation if generation is None else generation,
                       warmup_timeouts={s.name: reg.warmup_timeout(s.name) for s in specs})

    def concurrency_limit(self, model: str) -> int:
        """Workers one model may hold at once: max_concurrency from its <name>.json, else all but
        one when several models are served (a slow model cannot take the pool), else all."""
        own = self.registry.max_concurrency(model)
        if own:
            return own
        size = len(self.slots)
        return max(1, size if len(self.registry.entries) <= 1 else size - 1)

    def roll_over(self, ready: Process, timeout: float = 180.0) -> None:
        """Replace every slot's process by one of the registry's current generation, one slot at
        a time, each successor started before its predecessor retires (`ready` serves the first)."""
        if not self.slots:
            ready.close()
            return
        for i, slot in enumerate(list(self.slots)):
            done = slot.hand_over(ready if i == 0 else self.new_process(slot.index))
            deadline = time.monotonic() + timeout
            while not done.wait(0.05) and time.monotonic() < deadline and not self.stopping:
                pass

    def check_memory(self) -> None:
        """After a roll-over: say so when the workers, now holding other versions, no longer fit
        the memory the pool was sized for (the pool is not resized while it serves)."""
        proc = next((s.proc for s in self.slots if s.proc is not None), None)
        if proc is None:
            return
        fits, reason = self.memory_fit(proc.pid)
        if fits < len(self.slots):
            log.warning("pool: %s workers serve but only %s fit now: %s", len(self.slots), fits, reason)

    def on_ready(self, slot: Slot, proc: Process) -> None:
        self.registry.record(proc.generation, proc.ready.models)
        log.info("worker %s ready (pid %s, %.2f s)", slot.index, proc.pid, time.monotonic() - proc.started,
                 extra={"fields": {"event": "worker_ready", "slot": slot.index, "pid": proc.pid}})

    def version_of(self, proc: Process, model: str) -> str:
        for info in proc.ready.models:
            if info.name == model:
                return info.version
        return ""

    def has_idle_worker(self) -> bool:
        """A worker waits for work now (shadow scoring runs only then: gateway/traffic.py)."""
        return any(s.state == "idle" for s in self.slots) and not self.queue

    def ready(self) -> tuple[bool, str]:
        if self.draining or self.stopping:
            return False, "draining: the server is shutting down"
        if self.failed_reason:
            return False, self.failed_reason
        problem = self.registry.readiness_problem()
        if problem:
            return False, problem
        if not self.started:
            return False, "starting: workers are loading models"
        if not any(s.proc is not None for s in self.slots):
            return False, "no live worker"
        # Only models that failed at start count: a failed reload keeps the old version serving.
        failed = self.registry.failed_at_start()
        if failed:
            return False, f"model(s) failed to load: {', '.join(failed)}"
        return True, "ready"

    def status(self) -> dict:
        return {"workers": [s.describe() for s in self.slots],
                "queue_depth": len(self.queue), "queue_size": self.queue.size,
                "effective_size": len(self.slots), "size_reason": self.size_reason,
                "container_memory": resources.container_memory()}
