"""Settings: one typed table, validated once.

Every option of `rbridge serve` is a row of `FIELDS`. The same row gives the CLI flag
(`--max-body`), the environment variable (`RBRIDGE_MAX_BODY`) and the key in a JSON config file
(`max_body`). Precedence, lowest first: default, `--config` file, environment, command line.
`load()` returns a frozen `Settings`; unknown keys, bad values and conflicting options raise
`ConfigError` with a message for the operator. Nothing else in the bridge reads `os.environ`.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import json
import os
import re
from pathlib import Path

from rbridge.errors import ConfigError

ENV_PREFIX = "RBRIDGE_"
NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.I)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text) -> int:
    """'512M', '2GiB', '1048576' -> bytes."""
    if isinstance(text, int):
        return text
    m = _SIZE_RE.match(str(text))
    if not m:
        raise ValueError(f"not a size: {text!r} (use bytes or a suffix: 512M, 2G)")
    unit = (m.group(2) or "").lower().rstrip("b").rstrip("i")
    return int(float(m.group(1)) * _SIZE_UNITS[unit])


def parse_bool(text) -> bool:
    if isinstance(text, bool):
        return text
    value = str(text).strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {text!r} (use true or false)")


def parse_list(text) -> tuple:
    if isinstance(text, (list, tuple)):
        return tuple(str(t) for t in text)
    return tuple(t for t in re.split(r"[,\s]+", str(text)) if t)


@dataclasses.dataclass(frozen=True)
class Field:
    name: str
    type: object          # a callable that parses text
    default: object
    help: str
    cli: bool = True      # secrets come from the environment or a file, never argv (ps shows it)


FIELDS = [
    Field("models", Path, Path("models"), "folder of <name>.rds models (with optional .R and .json)"),
    Field("host", str, "127.0.0.1", "address to listen on (0.0.0.0 in a container)"),
    Field("port", int, 8000, "port to listen on"),
    Field("workers", int, 5, "R worker processes (capped at usable cores x --workers-per-core)"),
    Field("workers_per_core", int, 1, "R processes allowed per usable core"),
    Field("users", Path, Path("users.json"), "users file (created with an admin user when absent)"),
    Field("default_model", str, None, "model served at POST /predict"),
    Field("config", Path, None, "JSON file of settings (keys are these option names)"),
    Field("timeout", float, 30.0, "seconds a request may take before 504 (per model: timeout in <name>.json)"),
    Field("queue_size", int, 64, "requests waiting for a worker before 429"),
    Field("max_body", parse_size, 10 << 20, "largest request body in bytes (413 above)"),
    Field("max_model_bytes", parse_size, 1 << 30, "largest model upload (PUT /models/<name>) in bytes (413 above)"),
    Field("keep_versions", int, 5, "versions of each model kept for rollback (GET /models/<name>/versions)"),
    Field("max_rows", int, 100_000, "most rows in one request (413 above)"),
    Field("max_columns", int, 1_000, "most columns in one request (413 above)"),
    Field("graceful_timeout", float, 30.0, "seconds to finish in-flight requests on SIGTERM"),
    Field("http_server", str, "auto", "granian, waitress or gunicorn (auto: granian, for HTTP and HTTPS)"),
    Field("threads", int, 0, "HTTP server threads (0: sized from workers and queue)"),
    Field("metrics_port", int, None, "serve /metrics without auth on this port too (in-cluster scraping)"),
    Field("max_worker_memory", parse_size, None, "recycle a worker after its request when its memory passes this"),
    Field("worker_memory_limit", parse_size, None, "hard address-space limit per worker (R fails allocations)"),
    Field("max_requests", int, 0, "recycle a worker after this many requests (0: never)"),
    Field("max_requests_jitter", int, 0, "random extra requests before recycling, so workers do not recycle at once"),
    Field("capture_dir", Path, None, "folder captured predictions are written to (\"capture\" in <name>.json), "
          "one subfolder per model (default: <models>/.captures)"),
    Field("reload_interval", float, 2.0, "seconds between scans of the models folder (0: no hot reload)"),
    Field("allow_empty", parse_bool, False, "be ready with no models (a server filled by publishing)"),
    Field("warmup_timeout", float, None, "seconds each model's warm-up prediction may take before the "
          "model is failed (default: the model's timeout)"),
    Field("retry_on_crash", parse_bool, True, "retry once on another worker when a worker dies holding a request"),
    Field("max_batch_rows", int, 64, "most rows merged into one R call (0 or 1: no batching)"),
    Field("max_batch_wait_ms", float, 2.0, "how long a free worker waits for more rows to merge "
          "(only while every other worker is busy)"),
    Field("signing_key_file", Path, None, "file holding the token signing key(s)"),
    Field("signing_key", str, None, "token signing key (environment only)", cli=False),
    Field("token_ttl", int, 3600, "access token lifetime in seconds"),
    Field("refresh_token_ttl", int, 86400, "refresh token lifetime in seconds (POST /login/refresh)"),
    Field("certfile", Path, None, "TLS certificate (PEM): serve HTTPS"),
    Field("keyfile", Path, None, "TLS private key (PEM)"),
    Field("trusted_proxies", parse_list, (), "proxy addresses whose X-Forwarded-For is believed"),
    Field("max_inflight_per_client", int, 64, "requests in flight from one client address before 429, "
          "addresses in --trusted-proxies exempt (granian front; 0: no cap)"),
    Field("max_connections_per_client", int, 256, "connections from one client address before the idlest "
          "are closed, addresses in --trusted-proxies exempt (granian front on Linux; 0: no cap)"),
    Field("cors_origins", parse_list, (), "origins allowed by CORS (none: CORS off)"),
    Field("fetch_manifest", Path, None, "JSON manifest of model files to download at start"),
    Field("allow_http_fetch", parse_bool, False, "allow plain-HTTP URLs in the fetch manifest"),
    Field("log_format", str, "auto", "json, text, or auto (text on a terminal)"),
    Field("r_dir", Path, None, "folder of the bridge's R code (default: the one shipped)", cli=False),
]
_BY_NAME = {f.name: f for f in FIELDS}


@dataclasses.dataclass(frozen=True)
class Settings:
    models: Path
    host: str
    port: int
    workers: int
    workers_per_core: int
    users: Path
    default_model: str | None
    config: Path | None
    timeout: float
    queue_size: int
    max_body: int
    max_model_bytes: int
    keep_versions: int
    max_rows: int
    max_columns: int
    graceful_timeout: float
    http_server: str
    threads: int
    metrics_port: int | None
    max_worker_memory: int | None
    worker_memory_limit: int | None
    max_requests: int
    max_requests_jitter: int
    capture_dir: Path | None
    reload_interval: float
    allow_empty: bool
    warmup_timeout: float | None
    retry_on_crash: bool
    max_batch_rows: int
    max_batch_wait_ms: float
    signing_key_file: Path | None
    signing_key: str | None
    token_ttl: int
    refresh_token_ttl: int
    certfile: Path | None
    keyfile: Path | None
    trusted_proxies: tuple
    max_inflight_per_client: int
    max_connections_per_client: int
    cors_origins: tuple
    fetch_manifest: Path | None
    allow_http_fetch: bool
    log_format: str
    r_dir: Path | None

    def replace(self, **changes) -> "Settings":
        return _validate(dataclasses.replace(self, **changes))

    def public(self) -> dict:
        """The settings as shown to an admin: secrets left out."""
        out = {}
        for f in FIELDS:
            value = getattr(self, f.name)
            if f.name == "signing_key":
                value = "(set)" if value else None
            out[f.name] = str(value) if isinstance(value, Path) else value
        return out


def env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one flag per CLI field; values stay None so that unset flags do not override."""
    for f in FIELDS:
        if not f.cli:
            continue
        flag = "--" + f.name.replace("_", "-")
        default = f.default
        shown = f" (default: {default})" if default not in (None, (), "") else ""
        if f.type is parse_bool:
            parser.add_argument(flag, dest=f.name, action="store_const", const=True, default=None,
                                help=f"{f.help}{shown}; env {env_name(f.name)}")
        else:
            parser.add_argument(flag, dest=f.name, default=None, metavar=f.name.upper(),
                                help=f"{f.help}{shown}; env {env_name(f.name)}")


def load(cli: dict | None = None, env: dict | None = None) -> Settings:
    """Merge defaults, config file, environment and CLI values into validated Settings."""
    env = {k: v for k, v in (os.environ if env is None else env).items() if not _service_link(k, v)}
    cli = {k: v for k, v in (cli or {}).items() if v is not None}
    unknown_env = sorted(k for k in env if k.startswith(ENV_PREFIX)
                         and k[len(ENV_PREFIX):].lower() not in _BY_NAME)
    if unknown_env:
        raise ConfigError(f"unknown environment setting(s): {', '.join(unknown_env)}; "
                          f"known: {', '.join(env_name(f.name) for f in FIELDS)}")
    raw: dict[str, tuple[object, str]] = {}
    config_path = cli.get("config") or env.get(env_name("config"))
    if config_path:
        for key, value in _read_config(Path(config_path)).items():
            raw[key] = (value, f"{config_path}: {key}")
    for f in FIELDS:
        if env_name(f.name) in env:
            raw[f.name] = (env[env_name(f.name)], env_name(f.name))
    for key, value in cli.items():
        if key not in _BY_NAME:
            raise ConfigError(f"unknown option {key}")
        raw[key] = (value, "--" + key.replace("_", "-"))
    values = {}
    for f in FIELDS:
        if f.name not in raw:
            values[f.name] = f.default
            continue
        value, where = raw[f.name]
        try:
            values[f.name] = None if value is None else f.type(value)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{where}: {exc}") from None
    return _validate(Settings(**values))


def _service_link(key: str, value: str) -> bool:
    """Kubernetes injects RBRIDGE_SERVICE_HOST, RBRIDGE_PORT=tcp://... and RBRIDGE_PORT_8000_TCP...
    for a Service named rbridge: they are not settings, so they are passed over."""
    return key.startswith(("RBRIDGE_SERVICE_", "RBRIDGE_PORT_")) or (
        key == "RBRIDGE_PORT" and value.startswith(("tcp://", "udp://")))


def _read_config(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a JSON object of settings")
    unknown = sorted(set(data) - set(_BY_NAME) - {"config"})
    if unknown:
        raise ConfigError(f"config file {path}: unknown key(s) {', '.join(unknown)}")
    data.pop("config", None)
    return data


def _validate(s: Settings) -> Settings:
    def need(ok: bool, message: str) -> None:
        if not ok:
            raise ConfigError(message)

    need(1 <= s.port <= 65535, f"port must be 1-65535, not {s.port}")
    need(s.workers >= 1, f"workers must be at least 1, not {s.workers}")
    need(s.workers_per_core >= 1, f"workers-per-core must be at least 1, not {s.workers_per_core}")
    need(s.timeout > 0, "timeout must be positive")
    need(s.queue_size >= 1, "queue-size must be at least 1")
    need(s.max_body >= 1024, "max-body must be at least 1024 bytes")
    need(s.max_model_bytes >= 1024, "max-model-bytes must be at least 1024 bytes")
    need(s.keep_versions >= 1, "keep-versions must be at least 1")
    need(s.max_rows >= 1, "max-rows must be at least 1")
    need(s.max_columns >= 1, "max-columns must be at least 1")
    need(s.graceful_timeout >= 0, "graceful-timeout must not be negative")
    need(s.threads >= 0, "threads must not be negative")
    need(s.max_inflight_per_client >= 0, "max-inflight-per-client must not be negative")
    need(s.max_connections_per_client >= 0, "max-connections-per-client must not be negative")
    need(s.reload_interval >= 0, "reload-interval must not be negative")
    need(s.warmup_timeout is None or s.warmup_timeout > 0, "warmup-timeout must be positive")
    need(s.max_requests >= 0 and s.max_requests_jitter >= 0, "max-requests and its jitter must not be negative")
    need(s.max_batch_rows >= 0 and s.max_batch_wait_ms >= 0, "batch settings must not be negative")
    need(s.token_ttl >= 60, "token-ttl must be at least 60 seconds")
    need(s.refresh_token_ttl >= 60, "refresh-token-ttl must be at least 60 seconds")
    need(s.log_format in ("auto", "json", "text"), f"log-format must be auto, json or text, not {s.log_format!r}")
    need((s.certfile is None) == (s.keyfile is None), "--certfile and --keyfile go together: give both or neither")
    need(s.http_server in ("auto", "granian", "waitress", "gunicorn"),
         "http-server must be auto, granian, waitress or gunicorn")
    need(not (s.certfile and s.http_server == "waitress"), "waitress has no TLS: use --http-server granian "
         "(or auto, or gunicorn) with --certfile")
    need(s.metrics_port is None or (1 <= s.metrics_port <= 65535 and s.metrics_port != s.port),
         "metrics-port must be a free port other than --port")
    need(s.default_model is None or bool(NAME_RE.match(s.default_model)),
         f"default-model must match {NAME_RE.pattern}")
    need(s.signing_key is None or s.signing_key_file is None,
         "give the signing key as RBRIDGE_SIGNING_KEY or --signing-key-file, not both")
    for proxy in s.trusted_proxies:
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            raise ConfigError(f"trusted-proxies: {proxy!r} is not an address or network") from None
    return s


def field_names() -> list[str]:
    """The names of every setting (used by tests that check manifests against the code)."""
    return [f.name for f in FIELDS]
