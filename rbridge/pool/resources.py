"""What this process may use (cores, memory) and what each worker process uses, measured.

CPU: the cgroup v2 `cpu.max` quota (or v1 cfs quota/period) where one is set, else the CPUs this
process may run on. Memory: the cgroup limit (v2 `memory.max`, v1 `memory.limit_in_bytes`) and
current use, else the machine's. Per process: RSS, USS and PSS (psutil, from smaps) and peak RSS
(VmHWM from /proc/<pid>/status).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import psutil

CGROUP = Path("/sys/fs/cgroup")
_NO_LIMIT = 1 << 60


def usable_cpus() -> tuple[int, str]:
    """(cores, where the figure came from)."""
    try:
        count = len(os.sched_getaffinity(0))
    except AttributeError:
        count = os.cpu_count() or 1
    quota = _cpu_quota()
    if quota is not None and quota < count:
        return max(1, math.ceil(quota)), f"cgroup CPU quota {quota:g}"
    return count, f"{count} CPUs available to the process"


def _cpu_quota() -> float | None:
    try:
        text = (CGROUP / "cpu.max").read_text().split()
        if text[0] != "max":
            return int(text[0]) / int(text[1])
    except (OSError, IndexError, ValueError):
        pass
    try:
        quota = int((CGROUP / "cpu/cpu.cfs_quota_us").read_text())
        period = int((CGROUP / "cpu/cpu.cfs_period_us").read_text())
        if quota > 0:
            return quota / period
    except (OSError, ValueError):
        pass
    return None


def container_memory() -> dict:
    """{"limit": bytes, "used": bytes, "source": "cgroup v2" | "cgroup v1" | "machine"}."""
    for limit_file, used_file, source in (("memory.max", "memory.current", "cgroup v2"),
                                          ("memory/memory.limit_in_bytes",
                                           "memory/memory.usage_in_bytes", "cgroup v1")):
        try:
            raw = (CGROUP / limit_file).read_text().strip()
            used = int((CGROUP / used_file).read_text())
        except (OSError, ValueError):
            continue
        limit = _NO_LIMIT if raw == "max" else int(raw)
        if limit < psutil.virtual_memory().total:
            return {"limit": limit, "used": used, "source": source}
    vm = psutil.virtual_memory()
    return {"limit": vm.total, "used": vm.total - vm.available, "source": "machine"}


def process_memory(pid: int, full: bool = True) -> dict:
    """RSS, peak RSS and (full=True, slower: reads smaps) USS and PSS of one process, in bytes."""
    proc = psutil.Process(pid)
    out = {"rss": proc.memory_info().rss, "peak_rss": peak_rss(pid)}
    if full:
        info = proc.memory_full_info()
        out["uss"] = info.uss
        out["pss"] = getattr(info, "pss", info.uss)
    return out


def peak_rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0
