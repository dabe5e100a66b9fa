"""A Python client for an R Bridge server (needs only `requests`; never R, never the server's parts).

    from rbridge.client import Client
    bridge = Client("https://scoring.example.com", username="ana", password="...")
    bridge.predict("iris", [{"Sepal.Length": 5.1, "Sepal.Width": 3.5, ...}])   # -> ["setosa"]
    bridge.predict("iris", {"Sepal.Length": [5.1, 6.2], ...})                    # columns
    bridge.predict("iris", data_frame)                                            # pandas, if installed
    bridge.publish("iris", "iris.rds", config={"version": "2.0"})   # a publisher: the new version
    bridge.versions("iris"); bridge.activate("iris", 1)             # rollback

Credentials, first that is given: `api_key` (sent as X-API-Key), `token` (a bearer token you
already have), `username`/`password` (signs in at POST /login on first use). A signed-in client
renews its token before it expires, and once more when the server answers 401 token_expired:
with the refresh token through POST /login/refresh when the server gave one, else by signing in
again. Every failure is a `BridgeClientError(status, code, message)` carrying the server's
{"error": {"code", "message"}}; a server that cannot be reached gives status None.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import math
import threading
import time
from pathlib import Path
from urllib.parse import quote

import requests

RENEW_MARGIN = 30.0      # renew a token this long before it expires (at most a tenth of its lifetime)


class BridgeClientError(Exception):
    def __init__(self, status: int | None, code: str, message: str, details: dict | None = None):
        super().__init__(f"{status} {code}: {message}" if status else f"{code}: {message}")
        self.status, self.code, self.message = status, code, message
        self.details = details or {}


class Client:
    def __init__(self, url: str, username: str | None = None, password: str | None = None,
                 token: str | None = None, api_key: str | None = None, verify=True, timeout: float = 60):
        self.url = url.rstrip("/")
        self.username, self._password = username, password
        self.api_key, self.timeout = api_key, timeout
        self._token, self._refresh_token = token, None
        self._renew_at = math.inf if token else 0.0
        self._lock = threading.Lock()
        self.session = requests.Session()
        self.session.verify = verify
        self.session.headers["User-Agent"] = "rbridge-client"
        if username is not None and password is None and not (token or api_key):
            raise ValueError("a username needs a password")

    # -- the API ---------------------------------------------------------------------------------
    def predict(self, name: str, data) -> list:
        """Score rows: a list of row dicts, a dict of columns, or a pandas.DataFrame."""
        return self.predict_response(name, data)["predictions"]

    def predict_response(self, name: str, data) -> dict:
        """The whole answer: {"model", "version", "predictions"}."""
        return self._call("POST", f"/models/{quote(name, safe='')}/predict", body=to_body(data))

    def predict_csv(self, name: str, text: str | bytes) -> dict:
        """Score a CSV text (a header line, then rows); the server converts by the model's schema."""
        data = text.encode("utf-8") if isinstance(text, str) else text
        return self._call("POST", f"/models/{quote(name, safe='')}/predict", raw=data,
                          content_type="text/csv; charset=utf-8")

    def models(self) -> list:
        return self._call("GET", "/models")["models"]

    def model(self, name: str) -> dict:
        return self._call("GET", f"/models/{quote(name, safe='')}")

    # -- managing models (a publisher or an admin) ---------------------------------------------
    def publish(self, name: str, model, script=None, config=None) -> dict:
        """Upload `model` (an .rds path, or a Python model's .joblib, .pkl or .onnx), optional
        `script` (.R, R models only) and `config` (.json path or a dict).

        The server loads and warms it up first; the answer has the new version's number, sha256
        and input schema. A model that fails gives 422 with R's message; the old one keeps serving.
        """
        suffix = Path(model).suffix if Path(model).suffix in (".joblib", ".pkl", ".onnx") else ".rds"
        files = {"model": (f"{name}{suffix}", Path(model))}
        if script is not None:
            files["script"] = (f"{name}.R", Path(script))
        if config is not None:
            files["config"] = (f"{name}.json", json.dumps(config).encode() if isinstance(config, dict)
                               else Path(config))
        return self._call("PUT", f"/models/{quote(name, safe='')}", files=files)

    def versions(self, name: str) -> list:
        return self._call("GET", f"/models/{quote(name, safe='')}/versions")["versions"]

    def activate(self, name: str, version: int) -> dict:
        return self._call("POST", f"/models/{quote(name, safe='')}/versions/{int(version)}/activate")

    def delete(self, name: str) -> dict:
        return self._call("DELETE", f"/models/{quote(name, safe='')}")

    def close(self) -> None:
        self.session.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- requests and tokens -----------------------------------------------------------------------
    def _call(self, method: str, path: str, body=None, raw: bytes | None = None,
              content_type: str = "application/json", files: dict | None = None):
        if body is not None:
            raw = json.dumps(body, allow_nan=False, separators=(",", ":")).encode()
        for attempt in (1, 2):
            headers = self._auth_headers()
            if raw is not None:
                headers["Content-Type"] = content_type
            response = self._send(method, path, raw, headers, files)
            if response.status_code == 401 and attempt == 1 and self._can_renew() \
                    and _error_of(response)[0] in ("token_expired", "invalid_token", "token_revoked"):
                self._renew(force=True)
                continue
            if response.status_code >= 400:
                code, message, details = _error_of(response)
                raise BridgeClientError(response.status_code, code, message, details)
            return response.json()

    def _send(self, method, path, data, headers, files: dict | None = None) -> requests.Response:
        """`files`: field -> (filename, Path or bytes), opened here so a retry sends them whole."""
        with contextlib.ExitStack() as stack:
            try:
                opened = {field: (filename, content if isinstance(content, bytes)
                                  else stack.enter_context(open(content, "rb")))
                          for field, (filename, content) in (files or {}).items()} or None
                return self.session.request(method, self.url + path, data=data, headers=headers,
                                            files=opened, timeout=self.timeout)
            except requests.RequestException as exc:
                raise BridgeClientError(None, "connection_error", f"{self.url}: {exc}") from None
            except OSError as exc:
                raise BridgeClientError(None, "file_error", f"cannot read {exc.filename}: {exc.strerror}") from None

    def _auth_headers(self) -> dict:
        if self.api_key:
            return {"X-API-Key": self.api_key}
        if self._can_renew() and time.time() >= self._renew_at:
            self._renew()
        return {"Authorization": f"Bearer {self._token}"} if self._token else {}

    def _can_renew(self) -> bool:
        return not self.api_key and self.username is not None and self._password is not None

    def _renew(self, force: bool = False) -> None:
        """A fresh token: refresh when the server gave a refresh token, else sign in."""
        with self._lock:
            if not force and time.time() < self._renew_at:
                return                                   # another thread renewed it meanwhile
            answer = None
            if self._refresh_token:
                response = self._send("POST", "/login/refresh",
                                      json.dumps({"refresh_token": self._refresh_token}).encode(),
                                      {"Content-Type": "application/json"})
                answer = response.json() if response.status_code == 200 else None
            if answer is None:
                response = self._send("POST", "/login", json.dumps(
                    {"username": self.username, "password": self._password}).encode(),
                    {"Content-Type": "application/json"})
                if response.status_code != 200:
                    raise BridgeClientError(response.status_code, *_error_of(response))
                answer = response.json()
            self._token = answer["access_token"]
            self._refresh_token = answer.get("refresh_token")
            lifetime = float(answer.get("expires_in", 3600))
            self._renew_at = time.time() + lifetime - min(RENEW_MARGIN, lifetime / 10)


def _error_of(response: requests.Response) -> tuple[str, str, dict]:
    try:
        error = dict(response.json()["error"])
        return str(error.pop("code")), str(error.pop("message")), error
    except (ValueError, KeyError, TypeError):
        return "http_error", f"HTTP {response.status_code}: {response.text[:200]}", {}


# -- request bodies ------------------------------------------------------------------------------
def to_body(data) -> dict:
    """Rows (list of dicts), columns (dict of lists) or a pandas.DataFrame -> a request body.

    A body already in the bridge's shape ({"data": ...} or {"columns": ...}) is sent as it is.
    NaN (pandas' missing value) becomes null, which R reads as NA; dates and date-times become
    ISO 8601 strings, as the bridge reads them for R's Date and POSIXct columns.
    """
    if _is_dataframe(data):
        return {"columns": _frame_columns(data)}
    if isinstance(data, dict):
        if list(data) == ["data"] and isinstance(data["data"], list) \
                or list(data) == ["columns"] and isinstance(data["columns"], dict):
            return data
        return {"columns": {str(k): [_scalar(v) for v in vals] for k, vals in data.items()}}
    if isinstance(data, (list, tuple)):
        if not all(isinstance(r, dict) for r in data):
            raise TypeError("rows must be dicts of column: value")
        return {"data": [{str(k): _scalar(v) for k, v in r.items()} for r in data]}
    raise TypeError(f"cannot send a {type(data).__name__}: give a list of row dicts, a dict of "
                    "columns or a pandas.DataFrame")


def _is_dataframe(data) -> bool:
    return type(data).__module__.split(".")[0] == "pandas" and type(data).__name__ == "DataFrame"


def _frame_columns(frame) -> dict:
    import pandas   # only when a DataFrame was given: pandas is not a dependency

    out = {}
    for name in frame.columns:
        series = frame[name]
        missing = series.isna().tolist()
        if isinstance(series.dtype, pandas.CategoricalDtype):
            series = series.astype(object)
        out[str(name)] = [None if m else _scalar(v) for v, m in zip(series.tolist(), missing)]
    return out


def _scalar(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, (datetime.date, datetime.datetime)):   # pandas' Timestamp too: date / datetime columns
        return value.isoformat()
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):   # numpy scalars
        return _scalar(value.item())
    return value
