"""The benchmark harness still works end to end: bench/run.py --smoke (about 10 s).

It trains the bench's lm, starts rbridge, plumber and plumber behind nginx on free ports, checks that each one's
predictions equal R's predict(), loads each with wrk for a second, measures the R-only floor and writes results.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.r]


@pytest.mark.skipif(not all(shutil.which(t) or Path(f"/usr/sbin/{t}").exists() for t in ("wrk", "nginx", "Rscript")),
                    reason="the benchmark needs wrk, nginx and R (apt-get install wrk nginx r-cran-plumber)")
def test_bench_smoke(tmp_path):
    out = tmp_path / "smoke.json"
    cp = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "--smoke", "--out", str(out)],
                        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert cp.returncode == 0, f"bench/run.py --smoke failed:\n{cp.stdout}\n{cp.stderr}"
    res = json.loads(out.read_text())
    assert res["ok"] is True
    assert res["servers"] == ["rbridge", "rbridge-waitress", "plumber-1", "plumber-nginx"]
    assert set(res["correctness"]["lm_1"]) == set(res["servers"])
    (sc,) = res["scenarios"]
    for server in res["servers"]:
        m = sc["median"][server]
        assert m["requests"] > 0 and m["errors"] == 0 and m["rps"] > 0, (server, m)
        assert m["p50_ms"] > 0 and m["p99_ms"] >= m["p50_ms"]
    assert sc["floor_ms"] > 0
    assert sc["ratios"]["rps_vs_plumber_1"] > 0 and sc["ratios"]["rps_vs_plumber_nginx"] > 0
    assert sc["ratios"]["rps_vs_waitress"] > 0
    for server in ("rbridge", "rbridge-waitress"):          # the gateway's own CPU per request, measured
        assert 0 < sc["median"][server]["gateway_cpu_us"] < 1e6, sc["median"][server]
    assert "gateway_cpu_us" not in sc["runs"]["plumber-1"][0]
    assert out.with_suffix(".md").read_text().count("| lm 1row c8 keepalive |") == 1


@pytest.mark.skipif(not all(shutil.which(t) for t in ("wrk", "Rscript")),
                    reason="the benchmark needs wrk and R (apt-get install wrk)")
def test_bench_v2_smoke(tmp_path):
    """bench/run.py --v2: the Open Inference Protocol against the native route on one server."""
    out = tmp_path / "v2.json"
    cp = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "--v2", "--smoke", "--out", str(out)],
                        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert cp.returncode == 0, f"bench/run.py --v2 --smoke failed:\n{cp.stdout}\n{cp.stderr}"
    assert "native and /v2 predictions equal R's predict()" in cp.stderr
    res = json.loads(out.read_text())
    for kind in ("native", "v2"):
        m = res["median"][kind]
        assert m["requests"] > 0 and m["errors"] == 0 and m["rps"] > 0, (kind, m)
    assert res["ratios"]["rps_v2_vs_native"] > 0
    assert "V2 / native: requests/s" in cp.stdout
