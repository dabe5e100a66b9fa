"""Start to ready, and a respawned worker serving again: medians over several runs.

    .venv/bin/python bench/startup.py [--runs 5] [--models models]

Start to ready: from launching `rbridge serve` on the example models to the first 200 from
/readyz (the pool's first worker has loaded and warmed up every model). Respawn: SIGKILL an idle
worker, then time until a prediction is answered by its replacement (the other workers are
stopped first with --workers 1, so the answer must come from the new process).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from serverproc import ADMIN, free_port, make_users  # noqa: E402


def start_to_ready(models: Path, work: Path) -> tuple[float, subprocess.Popen, str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "bridge", "serve", "--models", str(models), "--users",
                             str(work / "users.json"), "--port", str(port), "--workers", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while True:
        try:
            if requests.get(url + "/readyz", timeout=1).status_code == 200:
                return time.perf_counter() - t0, proc, url
        except requests.RequestException:
            pass
        if time.perf_counter() - t0 > 60:
            proc.kill()
            raise RuntimeError("not ready in 60 s")
        time.sleep(0.01)


def respawn(url: str, model: str, row: dict) -> float:
    pid = requests.get(url + "/status", auth=ADMIN, timeout=5).json()["workers"][0]["pid"]
    t0 = time.perf_counter()
    os.kill(pid, signal.SIGKILL)
    while True:
        r = requests.post(f"{url}/models/{model}/predict", json={"data": [row]}, auth=ADMIN, timeout=30)
        if r.status_code == 200:
            new_pid = requests.get(url + "/status", auth=ADMIN, timeout=5).json()["workers"][0]["pid"]
            assert new_pid != pid
            return time.perf_counter() - t0
        time.sleep(0.005)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--models", default=str(ROOT / "models"))
    args = parser.parse_args()
    row = {"Sepal.Length": 5.1, "Sepal.Width": 3.5, "Petal.Length": 1.4, "Petal.Width": 0.2}
    starts, respawns = [], []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        make_users(work / "users.json")
        for _ in range(args.runs):
            seconds, proc, url = start_to_ready(Path(args.models), work)
            starts.append(seconds)
            requests.post(f"{url}/models/iris_rf/predict", json={"data": [row]}, auth=ADMIN, timeout=30)
            time.sleep(0.5)
            respawns.append(respawn(url, "iris_rf", row))
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
    print(f"start to ready (example models): median {statistics.median(starts):.2f} s "
          f"(runs: {', '.join(f'{s:.2f}' for s in starts)})")
    print(f"respawned worker serving again:  median {statistics.median(respawns):.2f} s "
          f"(runs: {', '.join(f'{s:.2f}' for s in respawns)})")


if __name__ == "__main__":
    main()
