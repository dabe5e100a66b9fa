"""Request bodies: size-capped reading, JSON with a nesting cap, parsed with orjson."""

from __future__ import annotations

import numpy as np
import orjson
from flask import Request, request
from werkzeug.exceptions import RequestEntityTooLarge

from rbridge.errors import BadRequest, TooLarge

MAX_JSON_DEPTH = 6       # {"data": [{col: value}]} is 3 levels; a row value may nest 3 more
SIGN_IN_MAX_BODY = 4096  # /login, /login/refresh, /logout: a name, a password or a token or two


class LimitedRequest(Request):
    """A chunked body (no Content-Length) that reaches --max-body is refused with 413.

    werkzeug stops reading such a body at MAX_CONTENT_LENGTH but returns what it read, cut
    short, without an error; waitress de-chunks bodies itself, gunicorn does not.
    """

    def get_data(self, *args, **kwargs):
        data = super().get_data(*args, **kwargs)
        limit = self.max_content_length
        if limit is not None and self.content_length is None and len(data) >= limit:
            raise RequestEntityTooLarge()
        return data


def json_body(limit: int | None = None):
    """The request's JSON body (400 when missing, malformed or nested too deep). With `limit`, a
    body of more bytes is a 413 before any of it is parsed, or even read past the limit."""
    return parse_json(request.get_data(cache=False) if limit is None else read_capped(limit))


def read_capped(limit: int) -> bytes:
    """At most `limit` bytes of body (413 beyond), for routes that need little: a sign-in body
    of 10 MB would otherwise cost a quarter of a gigabyte to parse, before the throttle looks."""
    too_large = TooLarge(f"this request's body must be at most {limit} bytes")
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    data = request.stream.read(limit + 1)
    if len(data) > limit:
        raise too_large
    return data


def parse_json(data: bytes, check_depth: bool = True):
    """`check_depth=False` where the caller checks the shape itself (oip.py: a value that nests
    is refused there); orjson still refuses more than 1024 levels."""
    if not data:
        raise BadRequest("the request has no body; send JSON")
    if check_depth and json_depth(data) > MAX_JSON_DEPTH:
        raise BadRequest(f"the JSON body nests deeper than {MAX_JSON_DEPTH} levels; row values are "
                         "numbers, strings, booleans or null", code="too_deep")
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from None


_NOT_MARKS = bytes(range(256)).translate(None, b'"[]{}')
_STEP = np.zeros(256, np.int32)
_STEP[[ord("["), ord("{")]], _STEP[[ord("]"), ord("}")]] = 1, -1


def json_depth(data: bytes) -> int:
    """How deep a JSON text nests, without parsing it (brackets inside strings do not count).

    Costs about 3 µs for a small body and 10 ms a megabyte; orjson alone would accept 1024 levels.
    """
    if b"\\" in data:   # drop escaped backslashes and quotes, so that every '"' left is real
        data = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    marks = data.translate(None, _NOT_MARKS)
    if len(marks) < 256:
        depth = deepest = 0
        inside = False
        for c in marks:
            if c == 34:
                inside = not inside
            elif not inside:
                depth += 1 if c in (91, 123) else -1
                deepest = max(deepest, depth)
        return deepest
    a = np.frombuffer(marks, np.uint8)
    outside = (np.cumsum(a == 34, dtype=np.int32) & 1) == 0
    return int(np.cumsum(_STEP[a] * outside).max())
