"""The image, for real: build it with podman, run it, log in, score, stop it with SIGTERM.

All the machinery (installing podman, the debootstrapped base image, the build and the
checks) is in tests/container/build_and_run.sh; this test runs it and passes its verdict on.
It takes a minute or two with a warm cache, up to ~6 minutes on a fresh machine (debootstrap,
apt and pip inside the build), so it runs only when asked: RBRIDGE_TEST_CONTAINER=1.
It needs root (podman as root, apt-get when podman is missing).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent / "build_and_run.sh"
TIMEOUT = 9 * 60

pytestmark = [
    pytest.mark.container,
    pytest.mark.skipif(os.environ.get("RBRIDGE_TEST_CONTAINER") != "1",
                       reason="container test: set RBRIDGE_TEST_CONTAINER=1 to build and run the image"),
]


def test_image_builds_runs_scores_and_stops_cleanly(tmp_path):
    log = tmp_path / "build_and_run.log"
    with log.open("w") as out:
        try:
            proc = subprocess.run(["bash", str(SCRIPT)], stdout=out, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"container test took more than {TIMEOUT} s:\n{log.read_text()[-4000:]}")
    text = log.read_text()
    print(text)
    lines = text.strip().splitlines()
    assert proc.returncode == 0 and lines and lines[-1] == "PASS", text[-6000:]
