"""bridge.client, `rbridge predict` and CSV request bodies: unit tests, then against real servers."""

from __future__ import annotations

import subprocess
import sys

import pytest

from rbridge.gateway import csvbody
from rbridge.client import to_body
from rbridge.errors import BadRequest

CARS_ROWS = [{"wt": 2.62, "hp": 110, "cyl": "6"}, {"wt": 3.215, "hp": 245, "cyl": "8"}]
CARS_SCHEMA = [{"name": "wt", "type": "numeric"}, {"name": "hp", "type": "numeric"},
               {"name": "cyl", "type": "factor", "levels": ["4", "6", "8"]}]
SIGNING_KEY = "k" * 48


# -- unit: request bodies ---------------------------------------------------------------------------
def test_to_body_shapes():
    assert to_body(CARS_ROWS) == {"data": CARS_ROWS}
    import datetime
    when = [{"d": datetime.date(2024, 1, 31), "t": datetime.datetime(2024, 1, 31, 12, tzinfo=datetime.timezone.utc)}]
    assert to_body(when) == {"data": [{"d": "2024-01-31", "t": "2024-01-31T12:00:00+00:00"}]}
    assert to_body({"wt": [2.62], "cyl": ["6"]}) == {"columns": {"wt": [2.62], "cyl": ["6"]}}
    assert to_body({"data": CARS_ROWS}) == {"data": CARS_ROWS}
    assert to_body([{"wt": float("nan")}]) == {"data": [{"wt": None}]}
    with pytest.raises(TypeError):
        to_body("wt,hp\n1,2\n")


def test_to_body_dataframe():
    pandas = pytest.importorskip("pandas")
    frame = pandas.DataFrame({"wt": [2.62, None], "hp": [110, 245],
                              "cyl": pandas.Categorical(["6", None], categories=["4", "6", "8"])})
    assert to_body(frame) == {"columns": {"wt": [2.62, None], "hp": [110, 245], "cyl": ["6", None]}}


def test_client_imports_nothing_of_the_server():
    code = ("import sys, rbridge.client; bad = [m for m in sys.modules if m.split('.')[0] in "
            "('rpy2', 'flask', 'numpy') or m in ('rbridge.pool', 'rbridge.worker', 'rbridge.gateway.app', 'rbridge.gateway')]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- unit: CSV bodies -------------------------------------------------------------------------------
def test_csv_is_typed_by_the_schema():
    schema = CARS_SCHEMA + [{"name": "n", "type": "integer"}, {"name": "am", "type": "logical"},
                            {"name": "note", "type": "character"}]
    body = csvbody.parse(b'wt,hp,cyl,n,am,note,extra\n2.62,110,6,3,TRUE,"a, b",x\n3.2,NA,8,4.0,false,,y\r\n',
                         schema)
    assert body == {"columns": {"wt": [2.62, 3.2], "hp": [110.0, None], "cyl": ["6", "8"], "n": [3.0, 4.0],
                                "am": [True, False], "note": ["a, b", None], "extra": ["x", "y"]}}


def test_csv_keeps_what_does_not_convert_for_validation_to_name():
    body = csvbody.parse(b"wt,hp,cyl\nheavy,inf,6\n", CARS_SCHEMA)
    assert body["columns"]["wt"] == ["heavy"] and body["columns"]["hp"] == ["inf"]


def test_csv_from_r_write_csv():
    data = b'"","wt","hp","cyl"\n"Mazda RX4",2.62,110,"6"\n"Valiant",NA,105,"6"\n'
    assert csvbody.parse(data, CARS_SCHEMA) == {"columns": {"wt": [2.62, None], "hp": [110.0, 105.0],
                                                            "cyl": ["6", "6"]}}


def test_csv_without_schema_guesses_per_column():
    body = csvbody.parse("\ufeffx,flag,name\n1,true,a\n2.5,,b\n".encode(), None)
    assert body == {"columns": {"x": [1.0, 2.5], "flag": [True, None], "name": ["a", "b"]}}


def test_csv_charset_and_errors():
    assert csvbody.parse("name\nJosé\n".encode("latin-1"), None, "ISO-8859-1") == {"columns": {"name": ["José"]}}
    for data, charset, words in ((b"", None, "no body"), (b"\n\n", None, "no header"),
                                 (b"a,a\n1,2\n", None, "repeated"), (b"a,b\n1\n", None, "line 2 has 1"),
                                 (b"a\n\xff\n", None, "not valid"), (b"a\n1\n", "klingon", "unsupported charset"),
                                 (b"a\n\\ud800\n", "unicode_escape", "unsupported charset"),
                                 (b'a,b\n"1,2\n', None, "not valid CSV")):
        with pytest.raises(BadRequest, match=words):
            csvbody.parse(data, None, charset)
