"""One error type for the whole bridge.

Every failure a caller can see is a `BridgeError` that knows its HTTP status and a stable
`code`. It serialises itself (`to_dict`/`from_dict`) so an error raised inside a worker crosses
the process boundary unchanged, and the app renders every error, its own and werkzeug's, as
`{"error": {"code": ..., "message": ...}}` with the right status. Tracebacks stay in the log.
"""

from __future__ import annotations


class BridgeError(Exception):
    status = 500
    code = "internal_error"

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None,
                 headers: dict | None = None, details: dict | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.headers = headers or {}
        self.details = details or {}

    def to_dict(self) -> dict:
        body = {"code": self.code, "message": self.message}
        body.update(self.details)
        return {"error": body, "status": self.status}

    @classmethod
    def from_dict(cls, data: dict) -> "BridgeError":
        error = dict(data["error"])
        code, message = error.pop("code"), error.pop("message")
        return BridgeError(message, code=code, status=data.get("status", 500), details=error)


class BadRequest(BridgeError):
    """The body is not JSON, or not in a shape the bridge reads (400)."""
    status, code = 400, "bad_request"


class Unauthorized(BridgeError):
    status, code = 401, "unauthorized"

    def __init__(self, message: str = "sign in: send HTTP Basic credentials or a bearer token "
                                      "from POST /login", **kw):
        kw.setdefault("headers", {"WWW-Authenticate": 'Basic realm="rbridge", charset="UTF-8"'})
        super().__init__(message, **kw)


class Forbidden(BridgeError):
    status, code = 403, "forbidden"


class NotFound(BridgeError):
    status, code = 404, "not_found"


class Conflict(BridgeError):
    """The request cannot be done in the server's present state (e.g. a read-only models folder)."""
    status, code = 409, "conflict"


class TooLarge(BridgeError):
    status, code = 413, "too_large"


class UnsupportedMediaType(BridgeError):
    """The body's Content-Type is not one this model reads (an image for a model of rows, say)."""
    status, code = 415, "unsupported_media_type"


class InvalidInput(BridgeError):
    """The rows do not fit the model's input schema (422), naming column, row and value."""
    status, code = 422, "invalid_input"


class RError(BridgeError):
    """R raised an error inside score() or predict(): R's message, never a traceback (422)."""
    status, code = 422, "r_error"


class ModelError(BridgeError):
    """A Python model's predict method raised: its exception's type and message (422)."""
    status, code = 422, "model_error"


class Overloaded(BridgeError):
    status, code = 429, "overloaded"


class Unavailable(BridgeError):
    """No worker can take the request, or the worker died while holding it (503)."""
    status, code = 503, "unavailable"


class Timeout(BridgeError):
    status, code = 504, "timeout"


class ConfigError(Exception):
    """A setting is wrong. Raised at start, shown to the operator, never to a caller."""
