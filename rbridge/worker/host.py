"""Every model one worker serves, each in the session of its kind.

A worker hosts all the models of its `Load` (the pool's design: any worker scores any model),
so one pool of processes, with one core and memory budget, serves R and Python models alike.
R starts only when an R model is among them: a worker of a Python-only folder never starts R
and never imports rpy2 (rsession.py imports it inside `RSession`). The Python session costs
nothing until a Python model loads (pysession.py imports scikit-learn or onnxruntime then).

Threading: the worker's main loop is the only caller.
"""

from __future__ import annotations

from rbridge.worker.pysession import PySession


class Host:
    def __init__(self, specs: list, r_dir=None):
        """Start R if an R model is among `specs`; raises rsession.StartError if it cannot start."""
        self.r = None
        if any(spec.kind == "r" for spec in specs):
            from rbridge.worker.rsession import RSession
            self.r = RSession(r_dir)
        self.py = PySession()
        self.kinds: dict[str, object] = {}        # model -> the session that loaded it

    @property
    def r_version(self) -> str:
        return self.r.r_version if self.r else ""

    def load(self, spec):
        session = self.r if spec.kind == "r" else self.py
        info = session.load(spec)
        if info.ok:
            self.kinds[spec.name] = session
        return info

    def unload(self, name: str) -> None:
        session = self.kinds.pop(name, None)
        if session is not None:
            session.models.pop(name, None)

    def score(self, name: str, parts: list) -> tuple[list, bool]:
        return self.kinds.get(name, self.py).score(name, parts)

    def time_limit(self, name: str, seconds: float | None):
        return self.kinds.get(name, self.py).time_limit(seconds)

    def heap(self) -> tuple[int, int]:
        """R's heap (used, most used); 0, 0 in a worker without R."""
        return self.r.heap() if self.r else (0, 0)
