"""Request rows -> typed column buffers, checked against the model's input schema.

R silently mispredicts on several kinds of bad input (ranger and gbm on an unseen factor level,
randomForest on a string in a numeric column), so nothing reaches R unchecked. Each column of
the schema becomes one buffer: float64 for numeric, int32 for integer, int32 codes (1-based,
into the training levels) for factors, a list of str for character, a list of bool for logical;
float64 for R's time types, which travel as ISO 8601 strings: a date as days since 1970-01-01,
a datetime as seconds since 1970-01-01 UTC (a string without an offset is read in the column's
"tz", UTC by default), a difftime as a number in the column's units.

null becomes NA, as R's predict() takes it, unless the column says "na": false (the user's
<name>.json, or the worker for a class whose predict() fails on NA: then "na_reason" says why).
Every problem is a 422 naming the column, the row, the value and what is allowed. Columns the
model does not use are ignored, except for Python models (`extra_ok=False`): scikit-learn and
ONNX take exactly their columns, and a misspelt name is better told than dropped. A string or (without a schema) a column name holding NUL is
refused: R would silently cut it short.

Models without a schema (R keeps none and there is no <name>.json) get their types from the
JSON values themselves, one type per column, never a silent cast to string.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo

import numpy as np

from rbridge.errors import BadRequest, InvalidInput, TooLarge

INT_NA = np.iinfo(np.int32).min
REAL_NA = np.array([0x7FF00000000007A2], dtype=np.uint64).view(np.float64)[0]   # R's NA_real_
_MISSING = object()


class Schema:
    """A model's columns compiled once for fast checking (levels -> code lookups)."""

    def __init__(self, columns: list | None, extra_ok: bool = True):
        self.columns, self.extra_ok = columns, extra_ok
        self.codes = {c["name"]: {lv: i + 1 for i, lv in enumerate(c["levels"])}
                      for c in columns or [] if c.get("levels")}

    def encode(self, body, max_rows: int, max_columns: int | None = None) -> tuple[dict, int]:
        """Parsed JSON body -> ({column: (type, buffer)}, nrows).

        More than `max_columns` columns (or than the schema has, if more) is a 413: without a
        schema each one becomes a column of R's data frame, and 10^5 of them take R 20 s.
        """
        values, nrows = _columns_of(body, max_rows)
        if max_columns is not None:
            _check_columns(values.width(), max(max_columns, len(self.columns or ())))
        if self.columns is None:
            return _infer(values, nrows), nrows
        out = {}
        for col in self.columns:
            name = col["name"]
            data = values(name)
            if data is None:
                need = ", ".join(c["name"] for c in self.columns)
                raise InvalidInput(f"missing column '{name}' (the model needs: {need})",
                                   code="missing_column", details={"column": name})
            out[name] = (col["type"], self._encode(col, data))
        if not self.extra_ok and len(out) < values.width():
            extra = next(n for n in values.names() if n not in out)
            need = ", ".join(c["name"] for c in self.columns)
            raise InvalidInput(f"unknown column '{extra}': the model takes exactly {need}",
                               code="unknown_column", details={"column": extra})
        return out, nrows

    def _encode(self, col: dict, data: list):
        kind, name = col["type"], col["name"]
        na = col.get("na_reason") or col.get("na", True)   # True, False, or why NA is refused
        if kind in ("numeric", "difftime"):
            return _numeric(name, data, na)
        if kind == "date":
            return _times(name, data, na, _days, "a date (ISO 8601, e.g. \"2024-01-31\")")
        if kind == "datetime":
            zone = zoneinfo.ZoneInfo(col.get("tz") or "UTC")
            return _times(name, data, na, lambda v: _seconds(v, zone),
                          "a date-time (ISO 8601, e.g. \"2024-01-31T12:00:00Z\")")
        if kind == "integer":
            return _integer(name, data, na)
        if kind == "factor":
            return _factor(name, data, na, self.codes[name], col["levels"])
        if kind == "character":
            return _character(name, data, na, col.get("levels"))
        if kind == "logical":
            return _logical(name, data, na)
        raise InvalidInput(f"column '{name}' has an unknown type {kind!r} in the schema")


def _columns_of(body, max_rows: int):
    """Return (the body's values by column, nrows) for either body shape."""
    if not isinstance(body, dict) or ("data" in body) == ("columns" in body):
        raise BadRequest('send {"data": [{"column": value, ...}, ...]} (rows) or '
                         '{"columns": {"column": [values, ...]}} (columns)')
    if "data" in body:
        rows = body["data"]
        if not isinstance(rows, list) or not rows:
            raise BadRequest('"data" must be a non-empty list of row objects')
        _check_rows(len(rows), max_rows)
        for i, row in enumerate(rows):
            if not isinstance(row, dict):
                raise BadRequest(f'"data"[{i}] must be an object of column: value')
        return _Rows(rows), len(rows)
    columns = body["columns"]
    if not isinstance(columns, dict) or not columns:
        raise BadRequest('"columns" must be a non-empty object of column: [values]')
    lengths = set()
    for name, vals in columns.items():
        if not isinstance(vals, list):
            raise BadRequest(f'"columns"."{name}" must be a list of values')
        lengths.add(len(vals))
    if len(lengths) != 1:
        raise BadRequest(f'every column in "columns" must have the same number of values, got {sorted(lengths)}')
    nrows = lengths.pop()
    if nrows == 0:
        raise BadRequest('"columns" holds no rows')
    _check_rows(nrows, max_rows)
    return _Columns(columns), nrows


def _check_rows(nrows: int, max_rows: int) -> None:
    if nrows > max_rows:
        raise TooLarge(f"{nrows} rows is more than this server takes in one request ({max_rows}); "
                       "split the request", code="too_many_rows")


def _check_columns(ncols: int, max_columns: int) -> None:
    if ncols > max_columns:
        raise TooLarge(f"{ncols} columns is more than this server takes in one request ({max_columns}, "
                       "--max-columns); send only the columns the model uses", code="too_many_columns")


class _Rows:
    """Values by column from a records body; a column missing from some rows is named with the row."""

    def __init__(self, rows: list):
        self.rows = rows

    def __call__(self, name):
        out = [row.get(name, _MISSING) for row in self.rows]
        if _MISSING in out:
            if all(v is _MISSING for v in out):
                return None
            i = out.index(_MISSING)
            raise InvalidInput(f"row {i} has no column '{name}'", code="missing_column",
                               details={"column": name, "row": i})
        return out

    def names(self) -> list:
        return _names_of_rows(self.rows)

    def width(self) -> int:
        return max(map(len, self.rows))


class _Columns:
    """Values by column from a columnar body."""

    def __init__(self, columns: dict):
        self.columns = columns

    def __call__(self, name):
        return self.columns.get(name)

    def names(self) -> list:
        return list(self.columns)

    def width(self) -> int:
        return len(self.columns)


def _names_of_rows(rows: list) -> list:
    names = list(rows[0])
    for i, row in enumerate(rows):
        if list(row) != names and set(row) != set(names):
            raise InvalidInput(f"row {i} has columns {sorted(row)} but row 0 has {sorted(names)}; "
                               "every row needs the same columns", code="missing_column")
    return names


def _bad(name: str, row: int, value, expected: str, code: str = "wrong_type"):
    shown = repr(value) if not isinstance(value, str) else f'"{value}"'
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return InvalidInput(f"column '{name}', row {row}: {shown} is not {expected}",
                        code=code, details={"column": name, "row": row})


def _null(name: str, row: int, na):
    why = na if isinstance(na, str) else 'the model\'s schema says "na": false for this column'
    return InvalidInput(f"column '{name}', row {row}: null is not allowed ({why})",
                        code="null_value", details={"column": name, "row": row})


def _allows_na(na) -> bool:
    """na is True/False, or the reason (a str) why NA is refused."""
    return na is True


def _numeric(name, data, na):
    na_ok = _allows_na(na)
    for i, v in enumerate(data):
        t = type(v)
        if t is not float and t is not int:
            if v is None:
                if not na_ok:
                    raise _null(name, i, na)
            else:
                raise _bad(name, i, v, "a number")
    if na_ok and None in data:
        return np.array([REAL_NA if v is None else v for v in data], dtype=np.float64)
    try:
        arr = np.array(data, dtype=np.float64)
    except OverflowError:
        arr = np.array([float(v) if abs(v) < 1e308 else np.inf for v in data])
    if not np.isfinite(arr).all():
        i = int(np.flatnonzero(~np.isfinite(arr))[0])
        raise _bad(name, i, data[i], "a finite number", code="non_finite")
    return arr


def _integer(name, data, na):
    out = np.empty(len(data), dtype=np.int32)
    for i, v in enumerate(data):
        t = type(v)
        if t is int or (t is float and v.is_integer()):
            if not -2147483647 <= v <= 2147483647:
                raise _bad(name, i, v, "an integer in R's range (|x| < 2^31)", code="out_of_range")
            out[i] = int(v)
        elif v is None:
            if not _allows_na(na):
                raise _null(name, i, na)
            out[i] = INT_NA
        else:
            raise _bad(name, i, v, "an integer")
    return out


def _factor(name, data, na, codes: dict, levels: list):
    out = np.empty(len(data), dtype=np.int32)
    get = codes.get
    for i, v in enumerate(data):
        code = get(v) if type(v) is str else None
        if code is not None:
            out[i] = code
        elif v is None:
            if not _allows_na(na):
                raise _null(name, i, na)
            out[i] = INT_NA
        else:
            raise _unknown_level(name, i, v, levels)
    return out


def _times(name, data, na, convert, expected):
    out = np.empty(len(data), dtype=np.float64)
    for i, v in enumerate(data):
        if v is None:
            if not _allows_na(na):
                raise _null(name, i, na)
            out[i] = REAL_NA
            continue
        if type(v) is not str:
            raise _bad(name, i, v, expected)
        try:
            out[i] = convert(v)
        except (ValueError, OverflowError):
            raise _bad(name, i, v, expected) from None
    return out


_EPOCH = dt.date(1970, 1, 1)


def _days(value: str) -> float:
    return float((dt.date.fromisoformat(value) - _EPOCH).days)


def _seconds(value: str, zone) -> float:
    """ISO 8601 date-time -> seconds since the epoch; without an offset it is a local time in zone."""
    moment = dt.datetime.fromisoformat(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    return moment.timestamp()


def _unknown_level(name, i, v, levels):
    allowed = ", ".join(f'"{lv}"' for lv in levels[:50]) + (", ..." if len(levels) > 50 else "")
    what = "a known level" if type(v) is str else "a level (a string)"
    err = _bad(name, i, v, what, code="unknown_level")
    err.message += f"; allowed: {allowed}"
    err.details["allowed"] = levels
    return err


def _nul(name: str, row: int | None = None):
    where = f"column '{name}'" + (f", row {row}" if row is not None else "")
    what = "a string" if row is not None else "the column name"
    details = {"column": name, **({"row": row} if row is not None else {})}
    return InvalidInput(f"{where}: {what} holds a NUL character (\\u0000), which R cannot keep "
                        "(it would cut the string short)", code="nul_character", details=details)


def _character(name, data, na, levels):
    allowed = set(levels) if levels else None
    for i, v in enumerate(data):
        if type(v) is str:
            if allowed is not None and v not in allowed:
                raise _unknown_level(name, i, v, levels)
            if "\0" in v:
                raise _nul(name, i)
        elif v is None:
            if not _allows_na(na):
                raise _null(name, i, na)
        else:
            raise _bad(name, i, v, "a string")
    return list(data)


def _logical(name, data, na):
    for i, v in enumerate(data):
        if type(v) is not bool:
            if v is None:
                if not _allows_na(na):
                    raise _null(name, i, na)
            else:
                raise _bad(name, i, v, "true or false")
    return list(data)


def _infer(values, nrows: int) -> dict:
    """No schema: one type per column from the JSON values; nulls are NA."""
    out = {}
    for name in values.names():
        if "\0" in name:       # R would cut it short: "a\0" would become a second column "a"
            raise _nul(name)
        data = values(name)
        kinds = {type(v) for v in data if v is not None}
        if kinds <= {int, float} and kinds:
            out[name] = ("numeric", _numeric(name, data, True))
        elif kinds == {str}:
            out[name] = ("character", _character(name, data, True, None))
        elif kinds == {bool}:
            out[name] = ("logical", _logical(name, data, True))
        elif not kinds:
            raise InvalidInput(f"column '{name}' holds only nulls; its type cannot be told "
                               "(this model has no schema: add one in <model>.json)", code="wrong_type")
        else:
            shown = ", ".join(sorted(k.__name__ for k in kinds))
            raise InvalidInput(f"column '{name}' mixes value types ({shown}); this model has no schema, "
                               "so each column must hold one type", code="wrong_type")
    return out


EXAMPLES = {"numeric": 1.0, "integer": 1, "logical": False, "difftime": 1.0, "date": "2024-01-31",
            "datetime": "2024-01-31T12:00:00Z"}


def example_rows(columns: list | None, n: int = 1) -> list:
    """Rows that fit the schema (for warm-up and the OpenAPI example)."""
    if not columns:
        return []
    row = {}
    for col in columns:
        kind, levels = col["type"], col.get("levels")
        row[col["name"]] = levels[0] if levels else EXAMPLES.get(kind, "a")
    return [dict(row) for _ in range(n)]
