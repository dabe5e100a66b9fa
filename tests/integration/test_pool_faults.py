"""Faults of issue 12 on the pool and models side, each against a real server with real R:
batching of schemaless models, one model hogging the pool, slow warm-ups, the models folder
gone or empty, an unreadable model file, and --max-worker-memory below a fresh worker."""

from __future__ import annotations

import concurrent.futures as cf
import json
import os
import shutil
import subprocess
import sys
import time

import pytest
import requests

from conftest import copy_models
from serverproc import ROOT, Server, free_port, make_users, rscript

pytestmark = [pytest.mark.r, pytest.mark.slow]
IRIS_COLUMNS = ["Sepal.Length", "Sepal.Width", "Petal.Length", "Petal.Width"]
CARS_ROW = {"wt": 2.5, "hp": 110, "cyl": "6"}


@pytest.fixture(scope="module")
def loose_models(tmp_path_factory):
    """nb: e1071 naiveBayes on iris, a model without a schema (columns: null), with R's own
    predictions for some rows."""
    d = tmp_path_factory.mktemp("loose")
    rscript(f'''
      suppressMessages(library(e1071))
      m <- naiveBayes(Species ~ ., iris); saveRDS(m, "{d}/nb.rds")
      rows <- seq(1, 150, by = 3)
      full <- as.character(predict(m, iris[rows, 1:4]))
      writeLines(jsonlite::toJSON(list(rows = rows, full = full)), "{d}/expected.json")
    ''')
    return d


def restarts(server) -> int:
    return sum(w["restarts"] for w in server.get("/status").json()["workers"])


def test_schemaless_batches_merge_only_identical_columns(loose_models, tmp_path):
    expected = json.loads((loose_models / "expected.json").read_text())
    iris = json.loads(rscript('cat(jsonlite::toJSON(iris[, 1:4], digits = NA))'))
    with Server(loose_models, tmp_path, "--workers", "1", "--max-batch-wait-ms", "30") as s:
        assert s.get("/models/nb").json()["schema"]["columns"] is None
        jobs = []
        for i, row in enumerate(expected["rows"]):
            full = iris[row - 1]
            jobs.append(("full", [full], expected["full"][i]))
            jobs.append(("extra", [dict(full, note="a")], expected["full"][i]))   # one more column
            jobs.append(("bool", [{k: bool(i % 2) for k in IRIS_COLUMNS}], None))
        with cf.ThreadPoolExecutor(12) as ex:
            replies = list(ex.map(lambda j: s.predict("nb", j[1]), jobs))
        wrong = [(kind, rows, want, r.status_code, r.text[:200]) for (kind, rows, want), r in zip(jobs, replies)
                 if want is not None and (r.status_code != 200 or r.json()["predictions"] != [want])]
        assert not wrong, f"{len(wrong)} of {2 * len(expected['rows'])} answers wrong: {wrong[:5]}"
        assert all(r.status_code in (200, 422) for (kind, _, _), r in zip(jobs, replies) if kind == "bool")
        assert restarts(s) == 0
        assert "Traceback" not in s.log_text()
