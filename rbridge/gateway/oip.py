"""The Open Inference Protocol (KServe V2 REST) wire format, as plain functions.

No Flask and no pool here, so that any front (views_v2.py, a lean WSGI path) can call them:
    read_infer(body, header_length)      -> InferRequest: the inputs as a columnar body
    columns_body(request, schema)        -> {"columns": {name: [values]}} for Schema.encode
    infer_response(request, model, version, output) -> (body bytes, headers)
    model_metadata(name, info)           -> the model's metadata document

One input tensor per column of the model's schema, shape [n] or [n, 1]; its datatype must fit
the column (FP64/FP32/INT32/INT64 for numeric, INT32/INT64 for integer, BYTES for factor and
character, BOOL for logical). Values then take the native route's way (Schema.encode), with its
checks and its 422s. Outputs: one tensor "predictions" for a vector, one per column for a table
(class probabilities, several outputs), FP64, INT32, BOOL or BYTES after R's type.

Missing values: JSON tensors have none. In the binary form (the binary tensor data extension:
`Inference-Header-Content-Length` bytes of JSON, then the raw tensors) NaN in FP64/FP32 and
-2147483648 (R's NA_integer_) in INT32/INT64 are NA where the column allows NA; BYTES and BOOL
have no form for it: those callers use the native API (null). Outputs: NA is null in JSON, NaN
in binary FP64, -2147483648 in binary INT32.
"""

from __future__ import annotations

import dataclasses
import struct

import numpy as np
import orjson

from rbridge.errors import BadRequest, InvalidInput
from rbridge.gateway.bodies import parse_json
from rbridge.pool import protocol
from rbridge.schema import INT_NA

HEADER = "Inference-Header-Content-Length"
VECTOR_OUTPUT = "predictions"
PLATFORM = "r-rds"                        # the ServingRuntime's model format (deploy/components/kserve)
PLATFORMS = {"sklearn": "sklearn", "onnx": "onnxruntime_onnx"}   # Python models' (Triton's names)
_BINARY = {"FP64": "<f8", "FP32": "<f4", "INT32": "<i4", "INT64": "<i8", "BOOL": "u1"}
DATATYPES = (*_BINARY, "BYTES")
ACCEPTS = {"numeric": ("FP64", "FP32", "INT32", "INT64"), "integer": ("INT32", "INT64"),
           "factor": ("BYTES",), "character": ("BYTES",), "logical": ("BOOL",),
           "date": ("BYTES",), "datetime": ("BYTES",),                     # ISO 8601 text, as natively
           "difftime": ("FP64", "FP32", "INT32", "INT64")}
_KIND_OF = {"FP64": "numeric", "FP32": "numeric", "INT32": "numeric", "INT64": "numeric",
            "BYTES": "character", "BOOL": "logical"}      # a model without a schema
_NA_FORM = {"numeric": "NaN in the binary tensor form", "difftime": "NaN in the binary tensor form",
            "integer": "-2147483648 in the binary tensor form"}
_U32 = struct.Struct("<I")


@dataclasses.dataclass
class Tensor:
    name: str
    datatype: str
    values: list                  # flat, n long; None for a missing value (binary form only)


@dataclasses.dataclass
class InferRequest:
    id: str | None
    parameters: dict | None       # echoed in the response, never passed to R
    inputs: list                  # [Tensor]
    nrows: int
    outputs: list | None          # [(name, binary or None)] as asked, None for all
    binary_output: bool           # the request's parameters.binary_data_output


# -- request ---------------------------------------------------------------------------------
def read_infer(body: bytes, header_length: str | None) -> InferRequest:
    """An inference request's body (JSON, or JSON + binary tensors) -> its inputs (400s)."""
    binary = b""
    if header_length is not None:
        try:
            size = int(header_length)
        except ValueError:
            size = -1
        if not 0 <= size <= len(body):
            raise BadRequest(f"{HEADER} must be the length of the JSON part, 0 to {len(body)} bytes, "
                             f"got {header_length!r}")
        body, binary = body[:size], memoryview(body)[size:]
    doc = parse_json(body, check_depth=False)   # tensors' names, datatypes and shapes nest 4 levels
    if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), list) or not doc["inputs"]:
        raise BadRequest('send {"inputs": [{"name", "shape", "datatype", "data"}, ...]}: one tensor per '
                         "column of the model (GET /v2/models/<name> lists them)")
    rid = doc.get("id")
    _parameters(doc, "the request")
    if rid is not None and not isinstance(rid, str):
        raise BadRequest('"id" must be a string')
    inputs, offset = [], 0
    for i, spec in enumerate(doc["inputs"]):
        tensor, offset = _input(i, spec, binary, offset)
        inputs.append(tensor)
    if offset != len(binary):
        raise BadRequest(f"the body has {len(binary) - offset} bytes of binary data that no input's "
                         "binary_data_size accounts for")
    names = [t.name for t in inputs]
    if len(set(names)) != len(names):
        raise BadRequest(f"inputs are named more than once: {sorted({n for n in names if names.count(n) > 1})}")
    lengths = {len(t.values) for t in inputs}
    if len(lengths) != 1:
        raise BadRequest(f"every input must hold the same number of rows, got {sorted(lengths)}")
    return InferRequest(rid, doc.get("parameters"), inputs, lengths.pop(), _requested(doc.get("outputs")),
                        bool(_parameters(doc, "the request").get("binary_data_output", False)))


def _input(i: int, spec, binary, offset: int) -> tuple[Tensor, int]:
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise BadRequest(f'inputs[{i}] must be an object with "name", "shape", "datatype" and "data"')
    name, datatype, shape = spec["name"], spec.get("datatype"), spec.get("shape")
    if datatype not in DATATYPES:
        raise BadRequest(f"input '{name}': datatype {datatype!r} is not one R Bridge takes "
                         f"({', '.join(DATATYPES)})")
    if (not isinstance(shape, list) or not 1 <= len(shape) <= 2 or
            not all(type(d) is int and d >= 1 for d in shape) or shape[1:] not in ([], [1])):
        raise BadRequest(f"input '{name}': shape {shape!r} is not [n] or [n, 1] (one column, n >= 1 rows)")
    n = shape[0]
    size = _parameters(spec, f"input '{name}'").get("binary_data_size")
    if size is not None:
        if type(size) is not int or size < 0 or offset + size > len(binary):
            raise BadRequest(f"input '{name}': binary_data_size {size!r} is more than the body's "
                             f"{len(binary) - offset} bytes left")
        return Tensor(name, datatype, _from_binary(name, datatype, binary[offset:offset + size], n)), offset + size
    if "data" not in spec:
        raise BadRequest(f"input '{name}' has no \"data\" (nor binary_data_size)")
    values = _flat(spec["data"])
    if len(values) != n:
        raise BadRequest(f"input '{name}': shape {shape} holds {n} values, data has {len(values)}")
    if None in values:
        i = values.index(None)
        raise InvalidInput(f"input '{name}', row {i}: null is not a value in a JSON tensor; a missing value "
                           "travels only in the binary form (FP64/FP32 NaN, INT32/INT64 -2147483648, where the "
                           "metadata's parameters.na says so) or as null in POST /models/<name>/predict",
                           code="null_value", details={"column": name, "row": i})
    return Tensor(name, datatype, values), offset


def _flat(data) -> list:
    if not isinstance(data, list):
        raise BadRequest('"data" must be a list of values (flat, or nested as [[v], [v], ...])')
    if data and isinstance(data[0], list):
        out = []
        for row in data:
            if not isinstance(row, list):
                raise BadRequest('"data" mixes values and lists')
            out.extend(row)
        return out
    return data


def _from_binary(name: str, datatype: str, raw, n: int) -> list:
    if datatype == "BYTES":
        return _bytes_elements(name, raw, n)
    width = np.dtype(_BINARY[datatype]).itemsize
    if len(raw) != n * width:
        raise BadRequest(f"input '{name}': {n} {datatype} values are {n * width} bytes, binary_data_size "
                         f"says {len(raw)}")
    arr = np.frombuffer(raw, _BINARY[datatype])
    if datatype == "BOOL":
        if (arr > 1).any():
            raise BadRequest(f"input '{name}': a BOOL is one byte, 0 or 1")
        return arr.astype(bool).tolist()
    values = arr.tolist()
    if datatype in ("FP64", "FP32"):
        if np.isnan(arr).any():
            return [None if v != v else v for v in values]
    elif (arr == INT_NA).any():
        return [None if v == INT_NA else v for v in values]
    return values


def _bytes_elements(name: str, raw, n: int) -> list:
    out, pos, raw = [], 0, bytes(raw)
    for _ in range(n):
        if pos + 4 > len(raw):
            raise BadRequest(f"input '{name}': the BYTES data ends before its {n} elements")
        (size,) = _U32.unpack_from(raw, pos)
        pos += 4
        if pos + size > len(raw):
            raise BadRequest(f"input '{name}': the BYTES data ends inside an element")
        try:
            out.append(raw[pos:pos + size].decode("utf-8"))
        except UnicodeDecodeError:
            raise BadRequest(f"input '{name}': element {len(out)} is not UTF-8 text") from None
        pos += size
    if pos != len(raw):
        raise BadRequest(f"input '{name}': {len(raw) - pos} bytes follow its {n} BYTES elements")
    return out


def _requested(outputs) -> list | None:
    if outputs is None:
        return None
    if not isinstance(outputs, list):
        raise BadRequest('"outputs" must be a list of {"name": ...}')
    out = []
    for spec in outputs:
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise BadRequest('each of "outputs" must be an object with a "name"')
        params = _parameters(spec, f"output '{spec['name']}'")
        if "classification" in params:
            raise BadRequest("the classification extension is not supported: ask for the outputs themselves")
        binary = params.get("binary_data")
        out.append((spec["name"], None if binary is None else bool(binary)))
    return out


def _parameters(spec: dict, what: str) -> dict:
    params = spec.get("parameters")
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise BadRequest(f'{what}: "parameters" must be an object')
    for key, value in params.items():       # the protocol's parameters are strings, numbers, booleans
        if not isinstance(value, (str, int, float, bool)):
            raise BadRequest(f'{what}: parameter "{key}" must be a string, number or boolean')
    return params


def columns_body(request: InferRequest, columns: list | None) -> dict:
    """The inputs as the native columnar body, each input's datatype checked against its column.

    Missing values from the binary form stay only where the column allows NA; elsewhere the
    sentinel goes on as a value (NaN is then refused as not finite, naming the column and row)."""
    by_name = {c["name"]: c for c in columns or []}
    out = {}
    for t in request.inputs:
        col = by_name.get(t.name)
        if columns is not None and col is None:
            continue                           # a column the model does not use: ignored, as natively
        kind = col["type"] if col else _KIND_OF[t.datatype]
        if t.datatype not in ACCEPTS.get(kind, ()):
            raise InvalidInput(f"input '{t.name}' is {t.datatype}, but the model's column is {kind}: send "
                               f"{' or '.join(ACCEPTS.get(kind, ('?',)))} (GET /v2/models/<name> lists the inputs)",
                               code="wrong_type", details={"column": t.name})
        values = t.values
        if col is not None and not takes_na(col) and None in values:   # the sentinel was a value
            raw = float("nan") if t.datatype.startswith("FP") else INT_NA
            values = [raw if v is None else v for v in values]
        out[t.name] = values
    return {"columns": out}


# -- response --------------------------------------------------------------------------------
def infer_response(request: InferRequest, model: str, version: str | None,
                   output: protocol.Output) -> tuple[bytes, dict]:
    """The worker's output as the protocol's response: (body, headers)."""
    tensors = dict(output_tensors(output))
    wanted = request.outputs if request.outputs is not None else [(n, None) for n in tensors]
    doc = {"model_name": model, "model_version": version or ""}
    if request.id is not None:
        doc["id"] = request.id
    if request.parameters is not None:
        doc["parameters"] = request.parameters
    outs, chunks = [], []
    for name, binary in wanted:
        if name not in tensors:
            raise BadRequest(f"model '{model}' has no output '{name}'; its outputs: {', '.join(tensors)}")
        datatype, values = tensors[name]
        tensor = {"name": name, "datatype": datatype, "shape": [request.nrows]}
        if request.binary_output if binary is None else binary:
            chunk = _to_binary(name, datatype, values)
            tensor["parameters"] = {"binary_data_size": len(chunk)}
            chunks.append(chunk)
        else:
            tensor["data"] = values
        outs.append(tensor)
    doc["outputs"] = outs
    head = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    if not chunks:
        return head, {"Content-Type": "application/json"}
    return b"".join([head, *chunks]), {HEADER: str(len(head)), "Content-Type": "application/octet-stream"}


def output_tensors(output: protocol.Output) -> list[tuple[str, tuple[str, object]]]:
    """[(name, (datatype, values))]: "predictions" for a vector, one per column for a table."""
    names = [VECTOR_OUTPUT] if output.kind == "vector" else output.names
    return [(n, (_datatype(v), v)) for n, v in zip(names, output.values)]


def _datatype(values) -> str:
    if isinstance(values, np.ndarray):
        return "FP64" if values.dtype.kind == "f" else "INT32"
    kinds = {type(v) for v in values} - {type(None)}
    return "BYTES" if str in kinds else "BOOL" if bool in kinds else "INT32" if kinds else "FP64"


def _to_binary(name: str, datatype: str, values) -> bytes:
    if datatype == "BYTES":
        if None in values:
            raise InvalidInput(f"output '{name}' holds NA, which has no binary BYTES form: ask for it as JSON "
                               '(parameters {"binary_data": false})', code="na_output")
        encoded = [v.encode("utf-8") for v in values]
        return b"".join(_U32.pack(len(e)) + e for e in encoded)
    if datatype == "BOOL" and None in values:
        raise InvalidInput(f"output '{name}' holds NA, which has no binary BOOL form: ask for it as JSON "
                           '(parameters {"binary_data": false})', code="na_output")
    if not isinstance(values, np.ndarray):
        values = [INT_NA if v is None else v for v in values]
    return np.asarray(values, dtype=_BINARY[datatype]).tobytes()


# -- metadata --------------------------------------------------------------------------------
def model_metadata(name: str, info: protocol.ModelInfo) -> dict:
    """Inputs named and typed from the model's schema; outputs from the warm-up's prediction."""
    inputs = [_input_metadata(c) for c in info.schema or []]
    outputs = [{"name": n, "datatype": dt, "shape": [-1]}
               for n, (dt, _) in output_tensors(info.sample_output)] if info.sample_output else []
    doc = {"name": name, "versions": [info.version], "platform": PLATFORMS.get(info.kind, PLATFORM),
           "inputs": inputs, "outputs": outputs, "parameters": {"r_class": info.r_class}}
    if info.schema is None:
        doc["parameters"]["inputs"] = ("this model has no schema: send one tensor per column, "
                                       "each column's type taken from its datatype")
    return doc


def takes_na(col: dict) -> bool:
    """As Schema.encode reads a column: NA unless "na": false, or the worker's "na_reason"."""
    return col.get("na", True) is not False and not col.get("na_reason")


def _input_metadata(col: dict) -> dict:
    kind = col["type"]
    params = {"r_type": kind}
    if col.get("levels"):
        params["levels"] = col["levels"]
    if col.get("ordered"):
        params["ordered"] = True
    if takes_na(col):
        params["na"] = _NA_FORM.get(kind, "no V2 tensor form: send null with POST /models/<name>/predict")
    return {"name": col["name"], "datatype": ACCEPTS.get(kind, ("BYTES",))[0], "shape": [-1],
            "parameters": params}
