"""The R client package (clients/r) against a real server: installs it, runs its testthat tests.

The tests train models in a fresh R session, publish them, score them and compare with predict().
"""

from __future__ import annotations

import os
import subprocess

import pytest

from serverproc import PUBLISHER, ROOT, Server

pytestmark = [pytest.mark.r, pytest.mark.slow]


def test_r_client_package(tmp_path):
    lib = tmp_path / "lib"
    lib.mkdir()
    install = subprocess.run(["R", "CMD", "INSTALL", "--no-test-load", "-l", str(lib), str(ROOT / "clients/r")],
                             capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stdout[-2000:] + install.stderr[-2000:]
    models = tmp_path / "models"
    models.mkdir()
    with Server(models, tmp_path / "server", "--workers", "2", "--reload-interval", "0", "--max-body", "1024",
                wait_ready=False) as server:
        env = {**os.environ, "R_LIBS": str(lib), "RB_URL": server.url, "RB_USER": PUBLISHER[0],
               "RB_PASSWORD": PUBLISHER[1]}
        run = subprocess.run(["Rscript", "-e", RUN_TESTS], cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=900)
        assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:] + server.log_text()[-3000:]
        counts = dict(item.split("=") for item in run.stdout.strip().splitlines()[-1].split())
        assert (counts["failed"], counts["skipped"], counts["errors"]) == ("0", "0", "0"), run.stdout
        assert int(counts["passed"]) >= 25, run.stdout


RUN_TESTS = """
library(rbridge)
results <- as.data.frame(testthat::test_dir("clients/r/tests/testthat", package = "rbridge",
                                            load_package = "installed", stop_on_failure = FALSE))
print(results[, c("test", "nb", "failed", "skipped", "error")])
cat(sprintf("passed=%d failed=%d skipped=%d errors=%d\n", sum(results$passed), sum(results$failed),
            sum(results$skipped), sum(results$error)))
"""
