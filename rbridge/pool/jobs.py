"""Jobs and the queue in front of the workers.

A `Job` is one request waiting for, or being scored by, a worker; HTTP threads wait on its
event. `JobQueue` is bounded (429 beyond `--queue-size`), FIFO, and lets a free worker take the
oldest job for a model it holds plus other queued jobs for the same model whose columns have the
same names and types, in the same order (micro-batching: nothing else is merged).
"""

from __future__ import annotations

import collections
import itertools
import threading
import time

from . import protocol
from rbridge.errors import BridgeError, Overloaded


STALE_AFTER = 2.0          # seconds a job waits for a worker that holds the encoding it was made for


class Job:
    """One request waiting for, or being scored by, a worker."""
    _ids = itertools.count(1)

    def __init__(self, model: str, part: protocol.Part, timeout: float, encoding: str | None = None):
        """`encoding`: protocol.encoding_key of the model version whose schema encoded `part`
        (None: any version will do)."""
        self.id = next(self._ids)
        self.model, self.part, self.nrows = model, part, part.nrows
        self.wanted = encoding
        self.shape = protocol.column_shape(part)
        self.timeout = timeout
        self.queued_at = time.monotonic()
        self.deadline = self.queued_at + timeout
        self.attempts = 0
        self.done = threading.Event()
        self.output = self.error = None
        self.slot = self.version = None

    def finish(self, output=None, error: BridgeError | None = None, slot=None, version=None):
        if self.done.is_set():
            return
        self.output, self.error, self.slot, self.version = output, error, slot, version
        self.done.set()


class _Waiter:
    """A thread waiting in the queue for a job it `wants`; woken alone when one comes."""
    __slots__ = ("wants", "cond", "notified")

    def __init__(self, wants, lock):
        self.wants, self.cond, self.notified = wants, threading.Condition(lock), False


class JobQueue:
    """A bounded FIFO of jobs, with taking of same-model jobs for a batch.

    `limit(model)`, if given, is how many workers may score a model at once: `take` passes over
    a model's jobs while that many workers hold it (other models' jobs go first), until the
    slot that took one calls `release`.

    Wake-ups are targeted: a job put wakes one waiting thread that can take it (an idle slot
    that holds its model, or a slot gathering a batch it fits), not every waiting slot. With
    the default five workers, waking them all cost each request four useless wake-ups (and GIL
    hand-offs) in the gateway.
    """

    def __init__(self, size: int, limit=None):
        self.size = size
        self._limit = limit
        self._holding: collections.Counter = collections.Counter()   # model -> workers scoring it
        self._jobs: collections.deque[Job] = collections.deque()
        self._lock = threading.Lock()
        self._waiters: list[_Waiter] = []
        self._wakes = 0
        self.closed = False

    def __len__(self):
        return len(self._jobs)

    def put(self, job: Job, front: bool = False) -> None:
        with self._lock:
            if not front and len(self._jobs) >= self.size:
                raise Overloaded(f"the server is busy: {len(self._jobs)} requests are waiting; "
                                 "retry shortly", headers={"Retry-After": "1"})
            (self._jobs.appendleft if front else self._jobs.append)(job)
            self._notify_for(job)

    def _notify_for(self, job: Job) -> bool:
        """Wake the first waiter (not woken yet) that wants `job`; True if there was one."""
        for w in self._waiters:
            if not w.notified and w.wants(job):
                w.notified = True
                w.cond.notify()
                return True
        return False

    def _pass_on(self) -> None:
        """A thread leaves without the job it may have been woken for (it returns for another
        reason, or the job no longer fits its batch): wake a waiter for each job still queued."""
        for job in self._jobs:
            self._notify_for(job)

    def _wait(self, wants, seconds: float) -> None:
        """Wait (the lock held) until a job `wants` is put, a wake, or `seconds` passed."""
        me = _Waiter(wants, self._lock)
        self._waiters.append(me)
        try:
            me.cond.wait(seconds)
        finally:
            self._waiters.remove(me)

    def take(self, timeout: float, models: dict | None = None) -> Job | None:
        """The oldest job for one of `models` (name -> encoding key of what the worker holds;
        None: any), waiting up to `timeout` s. During a reload old and new workers coexist: a
        version with the same columns as the one before has the same key, and either worker
        takes its jobs; a job encoded for other columns waits for a worker holding them, for
        STALE_AFTER seconds at most (then any worker of the model takes it and answers that the
        model changed)."""
        deadline = time.monotonic() + timeout

        def ours(job: Job) -> bool:
            return models is None or (job.model in models and job.wanted in (None, models[job.model]))

        def wants(job: Job, stale: float | None = None) -> bool:
            if stale is None:
                stale = time.monotonic() - STALE_AFTER
            return (ours(job) or (job.model in models and job.queued_at < stale)) and self._may_hold(job.model)

        with self._lock:
            wakes = self._wakes
            while True:
                now = time.monotonic()
                stale = now - STALE_AFTER
                for job in self._jobs:
                    if wants(job, stale):
                        self._jobs.remove(job)
                        self._holding[job.model] += 1
                        return job
                remaining = deadline - now
                if self.closed or remaining <= 0 or self._wakes != wakes:
                    self._pass_on()
                    return None
                # A job of our model waiting for another encoding becomes ours when it turns stale:
                # no put wakes us for that, so wake up then. (A job held back only by its model's
                # limit is woken for by release.)
                turning = [j.queued_at - stale for j in self._jobs
                           if j.queued_at >= stale and not ours(j) and j.model in models]
                self._wait(wants, max(0.001, min([remaining, *turning])))

    def take_left_behind(self, old: dict, new: dict) -> Job | None:
        """A queued job that a retiring worker holding `old` can score and its successor holding
        `new` cannot (encoded for the columns of the version being replaced), or None; never waits. The retiring
        worker scores these before it goes, past the model's concurrency limit if need be: they
        are the last of their version."""
        with self._lock:
            for job in self._jobs:
                if job.wanted is not None and old.get(job.model) == job.wanted != new.get(job.model):
                    self._jobs.remove(job)
                    self._holding[job.model] += 1
                    return job
        return None

    def _may_hold(self, model: str) -> bool:
        return self._limit is None or self._holding[model] < self._limit(model)

    def release(self, model: str) -> None:
        """A worker that took a job of `model` can take another (it scored, or was replaced);
        a queued job of that model that its limit held back may now go to a waiting slot."""
        with self._lock:
            self._holding[model] -= 1
            for job in self._jobs:
                if job.model == model and self._notify_for(job):
                    break

    def drain(self) -> list[Job]:
        """Every queued job, removed (the pool is stopping)."""
        with self._lock:
            jobs = list(self._jobs)
            self._jobs.clear()
            return jobs

    def take_more(self, first: Job, max_rows: int, wait: float) -> list[Job]:
        """Jobs that can join `first` in one R call (same model and encoding, same column shape)
        and fit in max_rows, waiting up to `wait` s for more to arrive."""
        taken, deadline = [], time.monotonic() + wait
        model, shape, wanted = first.model, first.shape, first.wanted

        def wants(job: Job) -> bool:
            return job.model == model and job.shape == shape and job.wanted == wanted \
                and job.nrows <= max_rows and not job.attempts

        with self._lock:
            while max_rows > 0:
                for job in list(self._jobs):
                    if wants(job):
                        self._jobs.remove(job)
                        taken.append(job)
                        max_rows -= job.nrows
                remaining = deadline - time.monotonic()
                if max_rows <= 0 or remaining <= 0:
                    break
                self._wait(wants, remaining)
            self._pass_on()
        return taken

    def remove(self, job: Job) -> bool:
        with self._lock:
            try:
                self._jobs.remove(job)
                return True
            except ValueError:
                return False

    def wake(self) -> None:
        """Return every waiting `take` now with None (a slot has been asked to do something)."""
        with self._lock:
            self._wakes += 1
            self._notify_all()

    def _notify_all(self) -> None:
        for w in self._waiters:
            w.notified = True
            w.cond.notify()

    def close(self) -> None:
        """Wake every waiting slot and stop waits from blocking (the pool is stopping)."""
        with self._lock:
            self.closed = True
            self._notify_all()
