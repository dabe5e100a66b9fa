"""A server with models whose R cannot start exits at boot with one line saying what to install.

The first worker finds what is missing (rpy2, R, or the bridge's R code) and answers
StartFailed instead of Ready; `rbridge serve` logs that one line at level critical and exits
3, rather than staying up unready with every model "loading". rpy2 missing is tested with the
installed wheel (tests/integration/test_wheel.py); R missing and the R code missing here, with
this checkout's venv. Models that fail to load (R works) keep others serving:
test_supervision.py::test_broken_model_leaves_others_serving_and_readyz_explains.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import requests

from serverproc import ROOT, Server, serve_until_exit

pytestmark = pytest.mark.r

EXIT_NO_R = 3
MODELS = ROOT / "models"


def critical_lines(output: str) -> list[str]:
    """The messages logged at level critical (the server logs JSON lines)."""
    lines = []
    for line in output.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("level") == "critical":
            lines.append(entry["message"])
    return lines


def assert_boot_exit(out, *expected: str) -> str:
    text = out.stdout + out.stderr
    assert out.returncode == EXIT_NO_R, f"exit code {out.returncode}, expected {EXIT_NO_R}:\n{text[-3000:]}"
    lines = critical_lines(text)
    assert len(lines) == 1, f"expected one critical line, got {lines}:\n{text[-3000:]}"
    for words in expected:
        assert words in lines[0], f"{words!r} not in {lines[0]!r}"
    return lines[0]


@pytest.mark.parametrize("http_server", ["granian", "waitress", "gunicorn"])
def test_r_code_missing_exits_at_boot_naming_the_folder(tmp_path, http_server):
    empty = tmp_path / "no-r-code"
    empty.mkdir()
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"r_dir": str(empty)}))
    started = time.monotonic()
    out = serve_until_exit(MODELS, tmp_path / "run", "--config", str(config),
                           "--http-server", http_server)
    line = assert_boot_exit(out, "R code is missing", str(empty), "reinstall rbridge")
    print(f"{time.monotonic() - started:.1f} s: {line}")


def test_r_not_on_path_exits_at_boot_saying_apt_get_install(tmp_path):
    # No R on the PATH and no R_HOME: what a machine without r-base-core looks like to rpy2.
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep)
                           if not (Path(p) / "R").exists())
    out = serve_until_exit(MODELS, tmp_path, env={"PATH": path or "/nonexistent", "R_HOME": ""})
    assert_boot_exit(out, "R is not installed", "apt-get install r-base-core")


def test_r_home_without_r_exits_at_boot(tmp_path):
    out = serve_until_exit(MODELS, tmp_path, env={"R_HOME": str(tmp_path / "no-R-here")})
    assert_boot_exit(out, "R is not installed at R_HOME=", "apt-get install r-base-core")


def test_without_models_the_server_stays_up_and_readyz_says_why(tmp_path):
    """No model, so no worker needs R (R starts only for R models: a folder of Python models is
    served without it, test_python_models.py): the server stays up, unready for want of models."""
    models = tmp_path / "models"
    models.mkdir()
    with Server(models, tmp_path, wait_ready=False, env={"R_HOME": str(tmp_path / "no-R-here")}) as s:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:       # /readyz names only the kind; /status says why
            r, why = requests.get(s.url + "/readyz", timeout=5), s.get("/status").json()["ready"]["reason"]
            if "no models" in why:
                break
            time.sleep(0.2)
        assert r.status_code == 503 and "no models" in why and "--allow-empty" in why, why
        assert s.proc.poll() is None, "the server exited although it had no model to serve"
