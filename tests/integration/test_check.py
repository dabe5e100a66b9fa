"""`rbridge check MODEL.rds`: the model loaded and scored by a fresh worker, as the server does it.

What it prints and its exit status are compared with what a real server says about the same files
and rows: the same load error, the same 422 message, the same predictions.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from serverproc import ROOT, Server, copy_models

pytestmark = pytest.mark.r


def run_check(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "rbridge", "check", *map(str, args)], capture_output=True,
                          text=True, timeout=180, cwd=cwd)


def printed_predictions(stdout: str):
    return json.loads(stdout[stdout.index("\n", stdout.index("predictions for")):])


@pytest.fixture(scope="module")
def check_server(fixture_models, tmp_path_factory):
    """A server with a model that fails to load and two that load, to compare messages with."""
    models = copy_models(fixture_models, tmp_path_factory.mktemp("check-models"), ["cv_glmnet", "lm_date"])
    with Server(models, tmp_path_factory.mktemp("check"), "--workers", "1", wait_ready=False) as s:
        deadline = time.monotonic() + 120
        while s.get("/models/cv_glmnet").json()["state"] != "failed" and time.monotonic() < deadline:
            time.sleep(0.2)
        yield s


def test_a_model_that_loads_shows_class_packages_schema_example_and_prediction(fixture_models):
    out = run_check(fixture_models / "lm_datetime.rds")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "R class:   lm\n" in text and "packages:  stats\n" in text
    assert "schema:    read from the fitted object" in text
    assert "time: datetime (tz America/New_York)" in text and "since: difftime (units weeks)" in text
    body = json.loads(text.split("example request body:\n", 1)[1].split("\n")[0])
    assert set(body["data"][0]) == {"Wind", "time", "since"}
    assert len(printed_predictions(text)) == 1


def test_rows_are_scored_as_the_server_scores_them(fixture_models, check_server):
    rows_file = fixture_models / "lm_date.rows.json"
    out = run_check(fixture_models / "lm_date.rds", "--rows", rows_file)
    assert out.returncode == 0, out.stderr
    served = check_server.predict("lm_date", json.loads(rows_file.read_text()))
    assert printed_predictions(out.stdout) == served.json()["predictions"]
    assert None in served.json()["predictions"]          # airquality's NA rows: R answers NA


def test_csv_rows(fixture_models, tmp_path):
    rows = json.loads((fixture_models / "lm_date.rows.json").read_text())[:3]
    lines = ["Solar.R,Wind,Temp,date"] + [
        ",".join("NA" if r[k] is None else str(r[k]) for k in ("Solar.R", "Wind", "Temp", "date")) for r in rows]
    (tmp_path / "rows.csv").write_text("\n".join(lines) + "\n")
    out = run_check(fixture_models / "lm_date.rds", "--rows", tmp_path / "rows.csv")
    assert out.returncode == 0, out.stderr
    expected = json.loads((fixture_models / "lm_date.expected.json").read_text())[:3]
    got = printed_predictions(out.stdout)
    assert [g is None for g in got] == [e is None for e in expected]
    assert all(abs(g - e) <= 1e-9 * abs(e) for g, e in zip(got, expected) if e is not None)


def test_a_model_that_fails_to_load_exits_1_with_the_servers_message(fixture_models, check_server):
    out = run_check(fixture_models / "cv_glmnet.rds")
    assert out.returncode == 1
    detail = check_server.get("/models/cv_glmnet").json()
    assert detail["state"] == "failed"
    assert out.stderr.strip() == detail["error"]
    assert "write score(model, newdata) in cv_glmnet.R" in out.stderr and not out.stdout


def test_rows_the_server_refuses_exit_1_with_its_422_message(fixture_models, check_server, tmp_path):
    bad = [{"Solar.R": 100, "Wind": 8, "Temp": 70, "date": "May 3rd"}]
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    out = run_check(fixture_models / "lm_date.rds", "--rows", tmp_path / "bad.json")
    served = check_server.predict("lm_date", bad)
    assert out.returncode == 1 and served.status_code == 422
    assert out.stderr.strip() == served.json()["error"]["message"]


def test_script_and_config_given_apart_from_the_model(fixture_models, tmp_path):
    """cv_glmnet with the score() its load error asks for, from files elsewhere."""
    (tmp_path / "score.R").write_text(
        'score <- function(model, newdata) predict(model, newx = as.matrix(newdata[, c("wt", "hp", "disp", "qsec")]),'
        ' s = "lambda.min")[, 1]\n')
    (tmp_path / "cfg.json").write_text(json.dumps({"schema": {"columns": [
        {"name": n, "type": "numeric"} for n in ("wt", "hp", "disp", "qsec")]}}))
    (tmp_path / "rows.json").write_text(json.dumps([{"wt": 2.5, "hp": 110, "disp": 160, "qsec": 16.5}]))
    out = run_check(fixture_models / "cv_glmnet.rds", "--script", tmp_path / "score.R", "--config",
                    tmp_path / "cfg.json", "--rows", tmp_path / "rows.json")
    assert out.returncode == 0, out.stderr
    assert "schema:    from the model's .json" in out.stdout
    value = printed_predictions(out.stdout)[0]
    assert 15 < value < 35


def test_the_check_process_never_starts_r(fixture_models):
    code = ("import sys; from rbridge.check import check; "
            f"rc = check({str(fixture_models / 'lm.rds')!r}); "
            "assert 'rpy2' not in sys.modules, 'rpy2 imported'; sys.exit(rc)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert out.returncode == 0, out.stderr


def test_usage_errors_exit_2(tmp_path):
    out = run_check(tmp_path / "nothing.rds")
    assert out.returncode == 2 and "give a model file NAME.rds" in out.stderr
