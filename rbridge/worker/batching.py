"""Merging a batch's parts into one call and splitting the answer, for either kind of session.

Only parts of one shape (the same columns, the same types: `protocol.column_shape`) are merged;
anything else is scored part by part, so no request can change another's answer.
"""

from __future__ import annotations

import numpy as np

from rbridge.pool import protocol


def one_shape(parts: list) -> bool:
    first = protocol.column_shape(parts[0])
    return all(protocol.column_shape(p) == first for p in parts[1:])


def concat(parts: list) -> dict:
    out = {}
    for name, (kind, _) in parts[0].columns.items():
        bufs = [p.columns[name][1] for p in parts]
        if kind in ("character", "logical", "image"):     # lists (numpy would cut a file's trailing NULs)
            out[name] = (kind, [v for b in bufs for v in b])
        else:
            out[name] = (kind, np.concatenate(bufs))
    return out


def split(output: protocol.Output, sizes: list) -> list:
    outs, start = [], 0
    for n in sizes:
        outs.append(protocol.Output(output.kind, output.names, [v[start:start + n] for v in output.values],
                                    output.levels))
        start += n
    return outs
