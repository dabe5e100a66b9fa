"""Shared fixtures: real servers with small models the tests train themselves (fixed seeds)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from serverproc import ROOT, Server, rscript

CHAOS_R = r'''
# A test model whose score() misbehaves on request: spin forever, eat memory, die, sleep, grow (and keep) x MiB.
score <- function(model, newdata) {
  mode <- newdata$mode[1]
  if (mode == "spin") repeat {}
  if (mode == "hog") { x <- list(); repeat x[[length(x) + 1]] <- numeric(1e7) }
  if (mode == "die") tools::pskill(Sys.getpid(), tools::SIGKILL)
  if (mode == "segv") tools::pskill(Sys.getpid(), 11L)
  if (mode == "sleep") Sys.sleep(newdata$x[1])
  if (mode == "grow") assign(".ballast", numeric(newdata$x[1] * 131072), envir = globalenv())   # x MiB, kept
  if (mode == "fail") stop("asked to fail")
  newdata$x * model$factor
}
'''
CHAOS_JSON = '''{"version": "chaos-1", "schema": {"columns": [
  {"name": "mode", "type": "character"}, {"name": "x", "type": "numeric"}]}}'''


@pytest.fixture(scope="session")
def small_models(tmp_path_factory) -> Path:
    """cars (lm with a factor), iris (randomForest classifier), chaos (misbehaving script)."""
    d = tmp_path_factory.mktemp("models")
    rscript(f'''
      d <- mtcars; d$cyl <- factor(d$cyl)
      saveRDS(lm(mpg ~ wt + hp + cyl, d), "{d}/cars.rds")
      suppressMessages(library(randomForest)); set.seed(42)
      saveRDS(randomForest(Species ~ ., iris, ntree = 30), "{d}/iris.rds")
      saveRDS(structure(list(factor = 2), class = "chaos"), "{d}/chaos.rds")
    ''')
    (d / "chaos.R").write_text(CHAOS_R)
    (d / "chaos.json").write_text(CHAOS_JSON)
    return d


@pytest.fixture(scope="session")
def server(small_models, tmp_path_factory):
    """One shared server (2 workers) for tests that do not disturb it."""
    with Server(small_models, tmp_path_factory.mktemp("server"), "--workers", "2", "--timeout", "20") as s:
        yield s


@pytest.fixture(scope="session")
def fixture_models(tmp_path_factory) -> Path:
    """The model zoo (tests/fixtures/make_fixtures.R): models of many R classes, their rows, and R's
    own predictions for them computed in a fresh R session (tests/fixtures/expected.R)."""
    d = tmp_path_factory.mktemp("fixtures")
    env = {**os.environ, "TZ": "UTC"}
    for script in ("make_fixtures.R", "expected.R"):
        out = subprocess.run(["Rscript", str(ROOT / "tests/fixtures" / script), str(d)], capture_output=True,
                             text=True, timeout=300, env=env)
        assert out.returncode == 0, f"{script} failed:\n{out.stderr[-3000:]}"
    return d
