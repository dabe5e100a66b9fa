"""Containers, for real, with podman: the image, and the README's first command on bare Debian.

* build_and_run.sh: build the image, run it, log in, score, stop it with SIGTERM (a minute or
  two with a warm cache, up to ~6 minutes on a fresh machine: debootstrap, apt and pip inside
  the build).
* readme_serve.sh: `bash scripts/dev.sh serve` exactly as the README gives it, in a bare
  debootstrapped bookworm from a clone of HEAD, then the README's curl calls and its answer
  (~6-9 minutes cold: apt downloads R, pip builds rpy2).
The machinery (podman, the debootstrapped base image, shared in lib.sh) and the checks are in
the scripts; these tests run them and pass their verdict on. They run only when asked:
RB_TEST_CONTAINER=1, and need root (podman as root, apt-get when podman is missing).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent

pytestmark = [
    pytest.mark.container,
    pytest.mark.skipif(os.environ.get("RB_TEST_CONTAINER") != "1",
                       reason="container test: set RB_TEST_CONTAINER=1 to build and run the image"),
]


def _run(script: str, timeout: int, tmp_path: Path) -> None:
    log = tmp_path / f"{script}.log"
    with log.open("w") as out:
        try:
            proc = subprocess.run(["bash", str(HERE / script)], stdout=out, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{script} took more than {timeout} s:\n{log.read_text()[-4000:]}")
    text = log.read_text()
    print(text)
    lines = text.strip().splitlines()
    assert proc.returncode == 0 and lines and lines[-1] == "PASS", text[-6000:]


def test_image_builds_runs_scores_and_stops_cleanly(tmp_path):
    _run("build_and_run.sh", 9 * 60, tmp_path)


def test_readme_serve_command_works_on_bare_debian(tmp_path):
    _run("readme_serve.sh", 16 * 60, tmp_path)
