"""For the gateway's unit tests: the real app, registry and authenticator around a fake pool (no R)."""

from __future__ import annotations

from rbridge import settings as settings_mod
from rbridge.gateway.app import create_app
from rbridge.gateway.auth import Authenticator
from rbridge.gateway.users import UserStore
from rbridge.metrics import Metrics
from rbridge.models.catalog import Entry
from rbridge.models.registry import Registry
from rbridge.pool import protocol
from serverproc import make_users

CARS = [{"name": "wt", "type": "numeric", "levels": None, "na": False},
        {"name": "cyl", "type": "factor", "levels": ["4", "6", "8"], "na": False},
        {"name": "note", "type": "character", "levels": None, "na": True},
        {"name": "n", "type": "integer", "levels": None, "na": False},
        {"name": "flag", "type": "logical", "levels": None, "na": False}]


class FakeJob:
    def __init__(self, output, version="v1", slot=0):
        self.output, self.version, self.slot = output, version, slot


class FakePool:
    """Scores by doubling `wt` (or raising what it is told to); records what it was sent."""

    def __init__(self):
        self.metrics = Metrics()
        self.queue = []
        self.sent = []
        self.raise_error = None
        self.raise_next = []          # errors to raise once each, in order, before scoring again

    def predict(self, model, part, timeout, encoding=None):
        self.sent.append((model, part))
        if self.raise_next:
            raise self.raise_next.pop(0)
        if self.raise_error:
            raise self.raise_error
        return FakeJob(protocol.Output("vector", None, [part.columns["wt"][1] * 2]))

    def ready(self):
        return True, "ready"

    def status(self):
        return {"workers": [], "queue_depth": 0, "queue_size": 1, "effective_size": 0, "size_reason": "",
                "container_memory": {"limit": 1, "used": 0, "source": "machine"}}


def fake_registry(settings, models=("cars",), schema=CARS) -> Registry:
    """A real registry holding `models` as if a worker had loaded each with `schema`."""
    entries = {m: Entry(m, protocol.ModelSpec(m, f"/x/{m}.rds", None, "v1", "0" * 64, {}, None)) for m in models}
    registry = Registry(settings, entries=entries)
    registry.record(0, [protocol.ModelInfo(m, "v1", ok=True, r_class=["lm"], schema=schema) for m in models])
    return registry


def gateway_app(tmp_path, models=("cars",), fast_path=True, **overrides):
    """(app, fake pool) with the test users, the given models and settings overrides."""
    s = settings_mod.load({"users": str(tmp_path / "users.json"), **overrides}, env={})
    make_users(s.users)
    pool = FakePool()
    app = create_app(s, fake_registry(s, models), pool, Authenticator(UserStore(s.users), [b"k" * 32], 3600),
                     fast_path=fast_path)
    return app, pool
