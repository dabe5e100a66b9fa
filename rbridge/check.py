"""`rbridge check MODEL.rds`: load a model the way a worker of the server does, and show what it serves.

For a data scientist to run before copying a file into `models/`. The model goes through the same
steps as on the server, not a second code path: the catalogue reads the files (`<name>.R` and
`<name>.json` beside the .rds, or the ones given), a fresh `python -m rbridge.worker` process
(rbridge.pool.process) loads it and warms it up, the gateway's validation (rbridge.schema) encodes
the rows and the worker scores them (rbridge.pool.protocol). This process never starts R.

Prints the R class, the packages loaded, the input schema and where it came from, an example request
body, and the predictions for the example or for the given rows. When the server would refuse the
model or the rows, prints exactly the server's message on stderr and exits 1.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from rbridge import settings as settings_mod
from rbridge.errors import BridgeError
from rbridge.gateway import csvbody
from rbridge.models import catalog
from rbridge.pool import protocol
from rbridge.pool.process import Process, await_ready
from rbridge.schema import Schema, example_rows

SOURCES = {"r": "read from the fitted object", "json": "from the model's .json",
           "none": "none: each request's JSON types are used"}


def check(rds: str, script: str | None = None, config: str | None = None, rows: str | None = None,
          out=sys.stdout, err=sys.stderr) -> int:
    rds_path = Path(rds)
    if not rds_path.is_file() or not rds_path.name.endswith(".rds"):
        raise ValueError(f"{rds}: give a model file NAME.rds")
    name = rds_path.name[:-4]
    if not settings_mod.NAME_RE.match(name):
        raise ValueError(f"{rds_path.name}: a model's name may hold letters, digits, '_', '.' and '-' only")
    settings = settings_mod.load({"log_format": "text"})
    with tempfile.TemporaryDirectory(prefix="rbridge-check-") as folder:
        entry = _entry(Path(folder), name, rds_path, script, config)
        if entry.spec is None:
            print(entry.error, file=err)
            return 1
        # The worker's own log (and R's console) would repeat what is printed here: kept aside, shown
        # only when the worker could not start.
        with open(Path(folder) / "worker.log", "w+b") as log:
            proc = Process(0, settings, [entry.spec], stderr=log)
            try:
                code = _report(proc, entry, rows, settings.max_rows, out, err)
            finally:
                proc.close()
            if proc.ready is None:
                log.seek(0)
                err.write(log.read().decode(errors="replace")[-3000:])
            return code


def _entry(folder: Path, name: str, rds: Path, script: str | None, config: str | None) -> catalog.Entry:
    """The catalogue's entry for the model, from a folder holding its files under the server's names."""
    files = {".rds": rds, ".R": script, ".json": config}
    for ext in (".R", ".json"):
        beside = rds.with_name(name + ext)
        if files[ext] is None and beside.is_file():
            files[ext] = beside
    for ext, path in files.items():
        if path is not None:
            if not Path(path).is_file():
                raise ValueError(f"{path}: no such file")
            shutil.copy(path, folder / f"{name}{ext}")
    return catalog.read_entry(folder, name)


def _report(proc: Process, entry: catalog.Entry, rows: str | None, max_rows: int, out, err) -> int:
    problem = await_ready(proc)
    if problem is not None:
        print(f"the worker did not start: {problem}", file=err)
        return 1
    info = proc.ready.models[0]
    if not info.ok:
        print(info.error, file=err)
        return 1
    print(f"model:     {entry.name} (version {entry.spec.version})", file=out)
    print(f"R class:   {', '.join(info.r_class)}", file=out)
    print(f"packages:  {', '.join(info.packages) or '(none beyond base R)'}", file=out)
    print(f"schema:    {SOURCES[info.schema_source]}", file=out)
    for col in info.schema or []:
        print(f"  {_describe(col)}", file=out)
    example = {"data": example_rows(info.schema, 1)}
    if info.schema:
        print(f"example request body:\n  {json.dumps(example)}", file=out)
    if rows is None and not info.schema:
        print("no schema to build an example from: give --rows to score some", file=out)
        return 0
    try:
        body = example if rows is None else _read_rows(rows, info.schema)
        columns, nrows = Schema(info.schema).encode(body, max_rows)
    except BridgeError as exc:
        print(exc.message, file=err)
        return 1
    protocol.send(proc.sock, protocol.Score(1, entry.name, [protocol.Part("check", nrows, columns)]))
    output = protocol.recv(proc.sock).outputs[0]
    if isinstance(output, dict):
        print(output["error"]["message"], file=err)
        return 1
    what = "the example" if rows is None else f"{nrows} row(s) of {rows}"
    print(f"predictions for {what}:\n{json.dumps(predictions(output), indent=2)}", file=out)
    return 0


def _describe(col: dict) -> str:
    text = f"{col['name']}: {col['type']}"
    if col.get("levels"):
        text += (" ordered " if col.get("ordered") else " ") + "levels " + ", ".join(col["levels"])
    for key in ("tz", "units"):
        if col.get(key):
            text += f" ({key} {col[key]})"
    if col.get("na_reason"):
        text += f"; no null: {col['na_reason']}"
    elif not col.get("na", True):
        text += "; no null"
    return text


def _read_rows(path: str, schema: list | None) -> dict:
    """Rows from FILE.csv (header, then rows) or FILE.json ({"data": ...}, {"columns": ...} or a list)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    if path.lower().endswith(".csv"):
        return csvbody.parse(data, schema)
    try:
        body = json.loads(data)
    except ValueError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from None
    return {"data": body} if isinstance(body, list) else body


def predictions(output: protocol.Output) -> list:
    """The worker's output as the server's JSON gives it: a list of values, or of row objects."""
    values = [_plain(v) for v in output.values]
    if output.kind == "vector":
        return values[0]
    return [dict(zip(output.names, row)) for row in zip(*values)]


def _plain(v) -> list:
    if isinstance(v, np.ndarray):
        return [None if isinstance(x, float) and x != x else x for x in v.tolist()]
    return list(v)
