"""The parts of a running server, built once and in order (gateway process).

Order: users file (an initial admin when empty) -> signing keys -> models fetched (optional)
-> versions store -> registry (the models folder, copied to snapshots the workers load, the
models recorded as versions, their rollouts resolved) -> metrics -> pool -> reloader -> app. Each part gets what it needs in its constructor; nothing is set afterwards.
"""

from __future__ import annotations

import atexit
import dataclasses
import logging
import shutil
import sys
import tempfile
from pathlib import Path

from flask import Flask

from rbridge.errors import ConfigError
from rbridge.gateway import users
from rbridge.gateway.app import create_app
from rbridge.gateway.auth import Authenticator, load_signing_keys
from rbridge.metrics import Metrics
from rbridge.models.registry import Registry
from rbridge.models.reload import Reloader
from rbridge.models.versions import VersionStore
from rbridge.pool.pool import Pool

log = logging.getLogger("bridge.server")


@dataclasses.dataclass(frozen=True)
class Service:
    settings: object
    registry: Registry
    pool: Pool
    reloader: Reloader
    app: Flask


def build(settings) -> Service:
    """Everything but the HTTP front."""
    password = users.ensure_initial_admin(settings.users)
    if password is not None:
        secret = settings.users.parent / users.INITIAL_PASSWORD_FILE
        log.warning("no users existed: created user 'admin' with a random password, written to %s "
                    "(mode 0600). Add users with: rbridge user add NAME --users %s", secret, settings.users)
        if sys.stdout.isatty():
            print(f"\n  admin password: {password}\n", flush=True)
    store = users.UserStore(settings.users)
    keys, persistent = load_signing_keys(settings)
    if not persistent:
        log.warning("no signing key configured (--signing-key-file or RBRIDGE_SIGNING_KEY): made a "
                    "random one; tokens will not survive a restart or work across replicas")
    fetch_error = _fetch(settings)
    if not settings.models.is_dir():
        raise ConfigError(f"--models {settings.models}: the folder does not exist"
                          + (" (the fetch failed)" if fetch_error else "") + "; create it or fix the path")
    snapshots = Path(tempfile.mkdtemp(prefix="rbridge-models-"))   # the versions workers load
    atexit.register(shutil.rmtree, snapshots, True)
    versions = _versions(settings)
    registry = Registry(settings, snapshots, versions=versions)
    if settings.default_model and settings.default_model not in registry.entries:
        raise ConfigError(f"--default-model {settings.default_model}: no {settings.default_model}.rds "
                          f"in {settings.models}")
    if not registry.entries:
        log.warning("no models in %s: add <name>.rds files%s", settings.models,
                    "" if settings.allow_empty else " (not ready until then; --allow-empty: ready when empty)")
    metrics = Metrics()
    pool = Pool(settings, registry, metrics, failed_reason=fetch_error)
    metrics.attach(pool)
    reloader = Reloader(registry, pool, settings.reload_interval, versions)
    authenticator = Authenticator(store, keys, settings.token_ttl,
                                  max(settings.refresh_token_ttl, settings.token_ttl))
    app = create_app(settings, registry, pool, authenticator, reloader)
    return Service(settings, registry, pool, reloader, app)


def _versions(settings) -> VersionStore:
    """The versions store (the registry records the models found at start in it, when writable)."""
    store = VersionStore(settings.models, settings.keep_versions)
    why = store.read_only()
    if why:
        log.info("%s: model management (PUT /models/<name>) answers 409", why)
    return store


def _fetch(settings) -> str | None:
    """Download the manifest's model files; returns why it failed (the pool then never starts)."""
    if not settings.fetch_manifest:
        return None
    from rbridge.models.fetch import FetchError, fetch_models
    try:
        fetch_models(settings.fetch_manifest, settings.models, allow_http=settings.allow_http_fetch)
    except FetchError as exc:
        log.error("fetching models failed: %s", exc)
        return f"fetching models failed: {exc}"
    return None
