"""The embedded R session itself (in a subprocess: embedding R changes the process environment,
which servers started later by other tests would inherit)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from serverproc import ROOT

pytestmark = pytest.mark.r

SCRIPT = r'''
import json, sys
from pathlib import Path
from rbridge.pool import protocol
from rbridge.worker.rsession import RSession, set_thread_env
from rbridge.schema import Schema
set_thread_env()
s = RSession(Path(sys.argv[1]))
out = {}
for name in ("cars", "iris"):
    info = s.load(protocol.ModelSpec(name, f"{sys.argv[2]}/{name}.rds", None, "v", "0" * 64, {}, None))
    rows = json.loads(sys.argv[3])[name]
    cols, n = Schema(info.schema).encode({"data": rows}, 1000)
    part = protocol.Part("x", n, cols)
    s.score(name, [part])
    before = sys.getrefcount(None)
    for _ in range(2000):
        s.score(name, [part])
    out[name] = sys.getrefcount(None) - before
print(json.dumps(out))
'''


def test_scoring_does_not_leak_references_to_none(small_models):
    """rpy2 3.5.17's vector memoryview() drops a reference to None per call; after enough
    requests CPython aborts the worker ("none_dealloc"). Scoring must not use it."""
    rows = {"cars": [{"wt": 2.5, "hp": 110, "cyl": "6"}] * 10,
            "iris": [{"Sepal.Length": 5.1, "Sepal.Width": 3.5, "Petal.Length": 1.4, "Petal.Width": 0.2}]}
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(ROOT / "rbridge" / "worker" / "r"), str(small_models), json.dumps(rows)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    deltas = json.loads(out.stdout.strip().splitlines()[-1])
    assert all(abs(d) < 50 for d in deltas.values()), deltas
