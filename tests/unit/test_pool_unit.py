"""Pool parts that need no R: the queue, batching, sizing from cores and memory."""

from __future__ import annotations

import collections
import threading
import time

import pytest

from rbridge.pool import protocol

from rbridge.pool import resources

from rbridge import settings as settings_mod
from rbridge.errors import Overloaded
from rbridge.metrics import Metrics
from rbridge.pool import jobs as jobs_mod
from rbridge.pool.jobs import Job, JobQueue
from rbridge.models.registry import Registry
from rbridge.pool.pool import Pool


def job(model="m", rows=1, timeout=30):
    return Job(model, protocol.Part("r", rows, {}), timeout)


def test_queue_is_bounded_and_fifo():
    q = JobQueue(2)
    a, b = job(), job()
    q.put(a)
    q.put(b)
    with pytest.raises(Overloaded) as err:
        q.put(job())
    assert err.value.status == 429 and err.value.headers["Retry-After"]
    assert q.take(0) is a and q.take(0) is b and q.take(0) is None


def test_take_more_merges_same_model_up_to_the_row_limit():
    q = JobQueue(10)
    jobs = [job("a", 3), job("b", 1), job("a", 3), job("a", 3), job("a", 1)]
    for j in jobs:
        q.put(j)
    first = q.take(0)
    assert first is jobs[0]
    mates = q.take_more(first, 5, 0)         # 8 - 3 rows left: the next 3-row job and the 1-row one
    assert mates == [jobs[2], jobs[4]]
    assert q.take(0) is jobs[1] and q.take(0) is jobs[3]


def test_take_more_waits_for_late_arrivals():
    q = JobQueue(10)
    late = job("a")
    threading.Timer(0.05, q.put, args=(late,)).start()
    t0 = time.monotonic()
    assert q.take_more(job("a"), 4, 0.5) == [late]
    assert time.monotonic() - t0 < 0.5 + 0.2


def test_take_only_models_the_worker_holds():
    q = JobQueue(10)
    a, b = job("a"), job("b")
    q.put(a)
    q.put(b)
    assert q.take(0, {"b": "v1"}) is b
    assert q.take(0, {"c": "v1"}) is None
    assert q.take(0) is a


def test_a_job_waits_for_a_worker_of_the_version_that_encoded_it(monkeypatch):
    """During a reload old and new workers coexist; a request encoded with the new version's
    schema reached an old worker (KeyError in the worker: a 500) until jobs carried the version."""
    q = JobQueue(10)
    new = Job("m", protocol.Part("r", 1, {}), 5, encoding="v2")
    q.put(new)
    assert q.take(0, {"m": "v1"}) is None                  # an old worker passes it over
    assert q.take(0, {"m": "v2"}) is new
    old = Job("m", protocol.Part("r", 1, {}), 5, encoding="v1")
    q.put(old)
    monkeypatch.setattr(jobs_mod, "STALE_AFTER", 0.0)        # no worker of its version is left
    assert q.take(0, {"m": "v2"}) is old                   # taken, to be answered "model changed"


def _info(version, levels=("4", "6", "8"), kind="r"):
    cols = [{"name": "wt", "type": "numeric", "levels": None, "na": True, "ordered": False},
            {"name": "cyl", "type": "factor", "levels": list(levels), "na": True, "ordered": False}]
    return protocol.ModelInfo("cars", version, True, schema=cols, kind=kind)


def test_versions_with_the_same_columns_share_their_jobs():
    """The soak (tests/integration/test_soak.py) saw 503 model_changed after a reload that only
    changed the version: the one worker of the new version was SIGSTOPped, and its jobs waited
    for it while workers of the old version, whose columns were the same, passed them over."""
    v1, v2 = protocol.encoding_key(_info("1")), protocol.encoding_key(_info("2"))
    assert v1 == v2
    assert protocol.encoding_key(_info("3", levels=("4", "6"))) != v1       # other levels
    assert protocol.encoding_key(_info("1", kind="sklearn")) != v1          # another reader
    assert protocol.encoding_key(protocol.ModelInfo("nb", "1", True)) == \
        protocol.encoding_key(protocol.ModelInfo("nb", "2", True))            # schemaless: any
    q = JobQueue(10)
    new = Job("cars", protocol.Part("r", 1, {}), 5, encoding=v2)
    q.put(new)
    assert q.take(0, {"cars": v1}) is new                  # an old worker takes it at once


def test_a_retiring_worker_takes_the_jobs_only_it_can_score():
    """At a swap, jobs encoded for the version the old worker holds go to it before it retires."""
    q = JobQueue(10)
    new, old, other = (Job("m", protocol.Part("r", 1, {}), 5, encoding="v2"),
                       Job("m", protocol.Part("r", 1, {}), 5, encoding="v1"),
                       Job("n", protocol.Part("r", 1, {}), 5, encoding="w1"))
    for j in (new, old, other):
        q.put(j)
    retiring, successor = {"m": "v1", "n": "w1"}, {"m": "v2", "n": "w1"}
    assert q.take_left_behind(retiring, successor) is old    # n's job: the successor can take it
    assert q.take_left_behind(retiring, successor) is None
    assert len(q) == 2


def test_wake_returns_a_waiting_take_at_once():
    """A slot asked to do something (a hand-over) must not sleep through its STATS_INTERVAL wait."""
    q = JobQueue(1)
    threading.Timer(0.1, q.wake).start()
    t0 = time.monotonic()
    assert q.take(5) is None and time.monotonic() - t0 < 1.0
    q.put(Job("m", protocol.Part("r", 1, {}), 5))        # a wake counts once: the next take gets the job
    assert q.take(5) is not None


def test_closed_queue_does_not_block():
    q = JobQueue(1)
    q.close()
    t0 = time.monotonic()
    assert q.take(5) is None and time.monotonic() - t0 < 0.5


def make_pool(**cli):
    s = settings_mod.load({k: str(v) for k, v in cli.items()}, env={})
    return Pool(s, Registry(s, entries={}), Metrics())


def test_workers_are_capped_by_cores_times_workers_per_core(monkeypatch):
    monkeypatch.setattr(resources, "usable_cpus", lambda: (2, "cgroup CPU quota 2"))
    n, why = make_pool(workers=5).effective_size()
    assert n == 2 and "capped at 2" in why and "cgroup CPU quota" in why
    n, _ = make_pool(workers=5, workers_per_core=3).effective_size()
    assert n == 5


def test_pool_starts_fewer_workers_when_memory_is_short(monkeypatch):
    gib = 1 << 30
    monkeypatch.setattr(resources, "peak_rss", lambda pid: 1 * gib)
    monkeypatch.setattr(resources, "container_memory", lambda: {"limit": 3 * gib, "used": 0, "source": "cgroup v2"})
    monkeypatch.setattr(resources, "process_memory", lambda pid, full=True: {"rss": 100 << 20})
    fits, why = make_pool().memory_fit(1234)
    assert fits == 2                               # (3 GiB * 0.9 - 100 MiB) // 1 GiB
    assert "1024 MiB" in why and "cgroup v2" in why and "fits 2" in why


def test_recycle_after_adds_jitter():
    p = make_pool(max_requests=100, max_requests_jitter=10)
    values = {p.recycle_after() for _ in range(200)}
    assert min(values) >= 100 and max(values) <= 110 and len(values) > 1
    assert make_pool().recycle_after() == 0


def test_cgroup_v2_limits_are_read(tmp_path, monkeypatch):
    (tmp_path / "memory.max").write_text("1073741824\n")
    (tmp_path / "memory.current").write_text("104857600\n")
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    monkeypatch.setattr(resources, "CGROUP", tmp_path)
    assert resources.container_memory() == {"limit": 1 << 30, "used": 100 << 20, "source": "cgroup v2"}
    cores, why = resources.usable_cpus()
    assert cores == 2 and "1.5" in why


def test_retried_jobs_are_never_merged_into_a_batch():
    q = JobQueue(10)
    retried, fresh = job("a"), job("a")
    retried.attempts = 1
    q.put(retried)
    q.put(fresh)
    assert q.take_more(job("a"), 10, 0) == [fresh]


def part(columns: dict, rows=1):
    return protocol.Part("r", rows, columns)


def test_take_more_merges_only_jobs_of_the_same_column_names_and_types():
    q = JobQueue(10)
    first = Job("a", part({"x": ("numeric", [1.0]), "y": ("character", ["u"])}), 30)
    same = Job("a", part({"x": ("numeric", [2.0]), "y": ("character", ["v"])}), 30)
    others = [Job("a", part(cols), 30) for cols in (
        {"x": ("logical", [True]), "y": ("character", ["v"])},               # another type
        {"x": ("numeric", [2.0])},                                            # fewer columns
        {"x": ("numeric", [2.0]), "y": ("character", ["v"]), "z": ("numeric", [1.0])},
        {"y": ("character", ["v"]), "x": ("numeric", [2.0])})]               # another order
    for j in others + [same]:
        q.put(j)
    assert q.take_more(first, 10, 0) == [same]
    assert len(q) == len(others)


def test_queue_depth_metric_counts_waiting_jobs():
    """rbridge_queue_depth, which components/keda scales on, is the pool's queue length at
    scrape time; rbridge_pool_size its worker slots."""
    from prometheus_client.parser import text_string_to_metric_families

    def scrape(metrics) -> dict[str, float]:
        return {s.name: s.value for f in text_string_to_metric_families(metrics.render().decode())
                for s in f.samples if s.name in ("rbridge_queue_depth", "rbridge_pool_size")}

    metrics = Metrics()
    s = settings_mod.load({"queue_size": "8"}, env={})
    pool = Pool(s, Registry(s, entries={}), metrics)
    metrics.attach(pool)
    assert scrape(metrics) == {"rbridge_queue_depth": 0, "rbridge_pool_size": 0}
    for _ in range(3):
        pool.queue.put(job())
    assert scrape(metrics)["rbridge_queue_depth"] == 3
    assert pool.queue.take(0) is not None
    assert scrape(metrics)["rbridge_queue_depth"] == 2


def test_a_model_at_its_concurrency_limit_lets_other_models_pass():
    limits = {"slow": 1, "fast": 2}
    q = JobQueue(10, limits.get)
    slow1, slow2, fast = job("slow"), job("slow"), job("fast")
    for j in (slow1, slow2, fast):
        q.put(j)
    assert q.take(0) is slow1
    assert q.take(0) is fast          # slow2 waits: slow holds its one worker
    assert q.take(0) is None
    q.release("slow")
    assert q.take(0) is slow2
    assert q.drain() == [] and len(q) == 0


def test_a_job_wakes_one_waiting_slot_that_can_take_it(monkeypatch):
    """Every put used to wake every waiting slot (notify_all): with five idle workers, four
    useless wake-ups per request, each a GIL hand-off in the gateway (quiet, medians of 3: a queue
    hop with 5 waiting slot threads cost 85 us of CPU before, 44 us after; 17 us with 1)."""
    q = JobQueue(10)
    scans, real = collections.Counter(), time.monotonic
    monkeypatch.setattr(jobs_mod.time, "monotonic",
                        lambda: scans.update([threading.current_thread().name]) or real())
    got = {}
    waiting = [threading.Thread(target=lambda k=k: got.setdefault(k, q.take(3, {"a": None})), name=f"w{k}")
               for k in range(5)]
    for t in waiting:
        t.start()
    time.sleep(0.3)
    scans.clear()
    q.put(job("b"))                    # no waiting slot holds b: nobody wakes
    time.sleep(0.2)
    assert sum(n for name, n in scans.items() if name.startswith("w")) == 0
    a = job("a")
    q.put(a)                           # one of them wakes, and takes it
    time.sleep(0.2)
    assert list(got.values()) == [a]
    assert sorted(n for name, n in scans.items() if name.startswith("w")) == [1]   # the one that took it
    q.close()
    for t in waiting:
        t.join(5)
    assert sorted(got.values(), key=lambda j: j is None) == [a, None, None, None, None]


def test_a_job_held_back_by_its_models_limit_does_not_spin_a_waiting_slot(monkeypatch):
    """A waiting slot wakes by a timer when a job of its model waiting for another encoding turns
    stale; a job held back only by the concurrency limit is no such job (release() wakes a slot
    for it), and must not make the slot's wait a 1 ms poll once it is older than STALE_AFTER."""
    q = JobQueue(10, limit=lambda model: 1)
    running = job("m")
    q.put(running)
    assert q.take(0, {"m": None}) is running           # m now holds its one worker
    held = job("m")
    held.queued_at -= 10                                 # queued long ago: stale for any worker
    q.put(held)
    scans, real = collections.Counter(), time.monotonic
    monkeypatch.setattr(jobs_mod.time, "monotonic",
                        lambda: scans.update([threading.current_thread().name]) or real())
    got = []
    t = threading.Thread(target=lambda: got.append(q.take(0.5, {"m": None})), name="idle-slot")
    t.start()
    time.sleep(0.3)
    assert scans["idle-slot"] <= 3                       # it waits, not polls
    q.release("m")                                       # the limit lets it go: the slot takes it
    t.join(5)
    assert got == [held]
