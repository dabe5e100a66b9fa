"""rbridge.schema: rows -> typed column buffers; NA as R takes it; R's time types from ISO 8601."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rbridge.errors import InvalidInput
from rbridge.models import catalog
from rbridge.schema import REAL_NA, Schema, example_rows


def encode(columns, rows):
    return Schema(columns).encode({"data": rows}, 1000)[0]


def test_null_is_na_unless_the_schema_says_na_false():
    cols = [{"name": "x", "type": "numeric"}, {"name": "f", "type": "factor", "levels": ["b", "a"]}]
    out = encode(cols, [{"x": 1.5, "f": "a"}, {"x": None, "f": None}])
    x = out["x"][1]
    assert x[0] == 1.5 and np.isnan(x[1]) and x.view(np.uint64)[1] == np.array([REAL_NA]).view(np.uint64)[0]
    assert out["f"][1].tolist() == [2, np.iinfo(np.int32).min]
    with pytest.raises(InvalidInput) as exc:
        encode([{"name": "x", "type": "numeric", "na": False}], [{"x": 1}, {"x": None}])
    assert exc.value.message == ("column 'x', row 1: null is not allowed "
                                 "(the model's schema says \"na\": false for this column)")


def test_a_class_that_fails_on_na_refuses_null_with_its_reason():
    cols = [{"name": "x", "type": "numeric", "na": False, "na_reason": "ranger cannot predict rows with missing values"}]
    with pytest.raises(InvalidInput) as exc:
        encode(cols, [{"x": None}])
    assert exc.value.message == "column 'x', row 0: null is not allowed (ranger cannot predict rows with missing values)"
    assert exc.value.status == 422


def test_dates_and_datetimes_from_iso_8601():
    cols = [{"name": "d", "type": "date"}, {"name": "t", "type": "datetime", "tz": "America/New_York"},
            {"name": "u", "type": "datetime"}, {"name": "w", "type": "difftime", "units": "weeks"}]
    out = encode(cols, [
        {"d": "1970-01-02", "t": "1973-05-02T16:30:00", "u": "1973-05-02T16:30:00", "w": 1.5},
        {"d": None, "t": "1973-05-02T20:30:00Z", "u": "1973-05-02T16:30:00+02:00", "w": None}])
    assert out["d"][1][0] == 1.0 and np.isnan(out["d"][1][1])
    assert out["t"][1][0] == out["t"][1][1] == 105222600.0        # 16:30 EDT is 20:30 UTC
    assert out["u"][1][0] - out["u"][1][1] == 2 * 3600             # no offset: UTC
    assert out["w"][0] == "difftime" and out["w"][1][0] == 1.5
    for bad in ("May 3rd", 19700102, "1970-13-01"):
        with pytest.raises(InvalidInput, match="column 'd', row 0: .* is not a date"):
            encode(cols[:1], [{"d": bad}])


def test_example_rows_fit_the_time_types():
    cols = [{"name": "d", "type": "date"}, {"name": "t", "type": "datetime"}, {"name": "w", "type": "difftime",
                                                                                "units": "days"}]
    encode(cols, example_rows(cols, 2))


def write(tmp_path, config):
    (tmp_path / "m.rds").write_bytes(b"x")
    (tmp_path / "m.json").write_text(json.dumps(config))
    return catalog.read_entry(tmp_path, "m")


def test_json_packages_and_time_column_keys(tmp_path):
    entry = write(tmp_path, {"packages": ["splines"], "schema": {"columns": [
        {"name": "t", "type": "datetime", "tz": "Europe/Berlin"}, {"name": "w", "type": "difftime", "units": "days"},
        {"name": "d", "type": "date", "na": False}]}})
    assert entry.error is None and entry.spec.packages == ["splines"]
    for config, message in (
            ({"packages": "splines"}, "packages must be a list of R package names"),
            ({"packages": ["not a package"]}, "packages must be a list of R package names"),
            ({"schema": {"columns": [{"name": "t", "type": "datetime", "tz": "Mars/Olympus"}]}}, "is not a time zone"),
            ({"schema": {"columns": [{"name": "w", "type": "difftime"}]}}, "a difftime needs units"),
            ({"schema": {"columns": [{"name": "x", "type": "numeric", "tz": "UTC"}]}}, "tz applies to datetime")):
        entry = write(tmp_path, config)
        assert entry.spec is None and message in entry.error, (config, entry.error)
