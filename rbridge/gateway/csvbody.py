"""CSV request bodies (Content-Type: text/csv) -> the columnar JSON shape the bridge reads.

A header line of column names, then one line per row (the csv module's default dialect: commas,
double quotes; a first column without a name is R's row names and is dropped), in UTF-8 (the
default), UTF-16 or Latin-1: any other charset is a 400, since codecs like unicode_escape or utf-7
turn bytes into lone surrogates that no R string can hold. The result is {"columns": {name: [values]}}, which then goes through the same
validation as JSON (validate.py), so every problem is reported the same way. Values are converted
by the model's schema: numbers for numeric and integer columns, true/false (any case) for
logical, the text itself for factor and character; an empty field or NA is null. A value that
does not convert stays text, so validation names its column, row and value. For a model without
a schema, a column whose every value reads as a number (or as true/false) becomes numbers (or
booleans), else text.
"""

from __future__ import annotations

import codecs
import csv
import io
import math

from rbridge.errors import BadRequest

NA = ("", "NA")
_BOOLS = {"true": True, "false": False}


def parse(data: bytes, columns: list | None, charset: str | None = None) -> dict:
    """CSV bytes -> {"columns": {name: [values]}} typed by the schema's `columns`."""
    if not data:
        raise BadRequest("the request has no body; send a header line and one line per row")
    text = _decode(data, charset)
    try:
        lines = list(csv.reader(io.StringIO(text, newline=""), strict=True))
    except csv.Error as exc:
        raise BadRequest(f"the body is not valid CSV: {exc}") from None
    lines = [line for line in lines if line]          # blank lines (a trailing newline, say)
    if not lines:
        raise BadRequest("the CSV body has no header line")
    header, rows = [h.strip() for h in lines[0]], lines[1:]
    if len(header) > 1 and header[0] == "":          # row names, as R's write.csv writes them
        header, rows = header[1:], [row[1:] for row in rows]
    seen = set()
    for name in header:
        if not name or name in seen:
            raise BadRequest(f"the CSV header has {'an empty' if not name else 'a repeated'} column name"
                             + (f" '{name}'" if name else ""))
        seen.add(name)
    for i, row in enumerate(rows, start=2):
        if len(row) != len(header):
            raise BadRequest(f"CSV line {i} has {len(row)} fields but the header has {len(header)}")
    kinds = {c["name"]: c["type"] for c in columns or []}
    out = {}
    for j, name in enumerate(header):
        raw = [row[j] for row in rows]
        kind = kinds.get(name) if columns is not None else _guess(raw)
        out[name] = [_convert(v, kind) for v in raw]
    return {"columns": out}


# Only charsets that decode to strings R can hold: codecs such as unicode_escape or utf-7 make
# lone surrogates out of the bytes, and rot13 or zlib are not character encodings at all.
# Keys are Python's canonical codec names; UTF-8 may start with a byte-order mark (spreadsheets).
CHARSETS = {"utf-8": "utf-8-sig", "utf-16": "utf-16", "utf-16-le": "utf-16-le", "utf-16-be": "utf-16-be",
            "iso8859-1": "latin-1"}


def _decode(data: bytes, charset: str | None) -> str:
    name = (charset or "utf-8").strip().lower()
    try:
        canonical = codecs.lookup(name).name
    except LookupError:
        canonical = None
    encoding = CHARSETS.get(canonical)
    if encoding is None:
        raise BadRequest(f"unsupported charset {charset!r}; send UTF-8 (or UTF-16, or Latin-1)",
                         code="unsupported_charset")
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise BadRequest(f"the CSV body is not valid {charset or 'UTF-8'} (byte {exc.start})") from None


def _convert(value: str, kind: str | None):
    if value in NA:
        return None
    if kind in ("numeric", "integer", "difftime"):
        try:
            number = float(value)
        except ValueError:
            return value
        # "inf", "nan" stay text and validation rejects them by name; 3.0 is a fine integer there
        return number if math.isfinite(number) else value
    if kind == "logical":
        return _BOOLS.get(value.strip().lower(), value)
    return value


def _guess(raw: list) -> str:
    """A type for a column of a model without a schema."""
    present = [v for v in raw if v not in NA]
    if present and all(_is_number(v) for v in present):
        return "numeric"
    if present and all(v.strip().lower() in _BOOLS for v in present):
        return "logical"
    return "character"


def _is_number(value: str) -> bool:
    try:
        return math.isfinite(float(value))
    except ValueError:
        return False
