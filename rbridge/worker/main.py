"""A worker process: one thread scoring what the gateway sends, with an embedded R for R models
and the Python models beside it (host.py says why one worker hosts both kinds).

Lifecycle: the pool starts `python -m rbridge.worker --fd N ...` as a fresh process (never a fork
of a process with R in it: a forked child shares R's temp directory and deletes it on exit).
The worker raises its own oom_score_adj (so that the kernel's OOM killer takes a worker, not the
gateway), applies the optional address-space limit, waits for `Load`, starts R if an R model is
among its models, loads every model, answers `Ready`, and serves `Score` and `Stats` messages
until its socket closes. If R cannot start (rpy2, R or the bridge's R code missing) it answers
`StartFailed` instead of `Ready`, saying what is missing and how to install it, and exits with
EXIT_R_FAILED so the pool knows respawning will not help.

Threading: single-threaded. The main loop is the only code that touches R or a model.
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import socket
import sys
import time

import numpy as np

from rbridge.errors import BridgeError
from rbridge.pool import protocol

log = logging.getLogger("bridge.worker")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="rbridge.worker")
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--slot", type=int, required=True)
    parser.add_argument("--r-dir", default=None, help="the R code (default: the one shipped)")
    parser.add_argument("--memory-limit", type=int, default=0)
    parser.add_argument("--log-format", default="text")
    args = parser.parse_args(argv)

    from rbridge.logs import setup_logging
    setup_logging(args.log_format, worker=args.slot)
    sys.excepthook = lambda *exc: log.critical("the worker failed", exc_info=exc)   # one record, not raw lines
    sock = socket.socket(fileno=args.fd)
    _protect_gateway()
    if args.memory_limit:
        resource.setrlimit(resource.RLIMIT_AS, (args.memory_limit, args.memory_limit))

    _one_thread()
    from rbridge.worker.rsession import StartError
    try:
        load = protocol.recv(sock)
    except EOFError:
        return 0
    if not isinstance(load, protocol.Load):
        return protocol.EXIT_PROTOCOL
    from rbridge.worker.host import Host
    try:
        session = Host(load.models, args.r_dir)
    except StartError as exc:  # rpy2, R or the bridge's R code is missing: nothing to retry
        log.debug("R could not start in worker %s: %s", args.slot, exc)   # the gateway says it
        _send_quietly(sock, exc.failure)
        return protocol.EXIT_R_FAILED
    except Exception as exc:
        log.exception("R could not start in worker %s", args.slot)
        _send_quietly(sock, protocol.StartFailed("R", f"R did not start: {exc}",
                                                 "see the worker's traceback in the log"))
        return protocol.EXIT_R_FAILED
    return serve(sock, session, load)


def _one_thread() -> None:
    """One thread per worker (the pool is the parallelism), set before numpy's BLAS, R or
    onnxruntime load: they read it once, when they start (rsession.set_thread_env does the same
    for an R embedded in a test process)."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")


def _send_quietly(sock: socket.socket, message) -> None:
    try:
        protocol.send(sock, message)
    except OSError:   # the gateway has gone: nobody to tell
        pass


def serve(sock: socket.socket, session, message: protocol.Load) -> int:
    """Load the models of `message`, answer Ready, then score until the socket closes."""
    infos = [_load(session, spec, message.warmup_timeouts.get(spec.name)) for spec in message.models]
    for info in infos:
        if not info.ok:
            log.error("model %s failed to load: %s", info.name, info.error)
    protocol.send(sock, protocol.Ready(os.getpid(), infos, session.r_version))
    while True:
        try:
            message = protocol.recv(sock)
        except EOFError:
            return 0
        if isinstance(message, protocol.Score):
            started = time.perf_counter()
            outputs, merged = _score(session, message)
            protocol.send(sock, protocol.Scored(message.batch_id, outputs,
                                                time.perf_counter() - started, merged))
        elif isinstance(message, protocol.Stats):
            used, peak = session.heap()
            maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            protocol.send(sock, protocol.StatsReply(used, peak, maxrss))
        else:
            return protocol.EXIT_PROTOCOL


def _score(session, message: protocol.Score) -> tuple[list, bool]:
    """Score a batch; an exception in the bridge's code is each part's error, never the worker's end."""
    try:
        return session.score(message.model, message.parts)
    except Exception as exc:
        log.exception("scoring batch %s for model %s failed in the bridge", message.batch_id, message.model)
        error = BridgeError(f"the bridge could not score this request: {type(exc).__name__}: {exc}",
                            code="internal").to_dict()
        return [error] * len(message.parts), False


def _load(session, spec: protocol.ModelSpec, warmup_timeout: float | None) -> protocol.ModelInfo:
    """Load one model; a failure of any kind marks that model failed, never the worker."""
    try:
        info = session.load(spec)
    except Exception as exc:
        log.exception("model %s: loading failed in the bridge", spec.name)
        return protocol.ModelInfo(spec.name, spec.version, ok=False,
                                  error=f"the bridge could not load it: {exc}")
    if info.ok and (info.schema or spec.image):
        started = time.monotonic()
        error = _warm_up(session, info, warmup_timeout, spec.image)
        if error and warmup_timeout and time.monotonic() - started >= warmup_timeout:
            info.warmup_timed_out = True
            error = (f"it took longer than {warmup_timeout:g} s (--warmup-timeout, default the "
                     f"model's timeout); R said: {error}")
        if error:
            info.error = f"the warm-up prediction failed: {error}"
        else:
            info.error = _top_k_problem(spec, info)
        if info.error:
            session.unload(spec.name)
            info.ok = False
    return info


def _warm_up(session, info: protocol.ModelInfo, seconds: float | None, image: dict | None = None) -> str | None:
    """Score one schema-shaped row (an image model: one blank image), so a model that cannot
    predict is caught now, not by a caller; R stops it after `seconds` (where R checks for
    interrupts; the pool's start timeout is the backstop for compiled code that never does). Its
    answer tells the names and types of the model's outputs (the V2 metadata shows them)."""
    if image:
        from rbridge.worker.images import blank
        part = protocol.Part("warm-up", 1, {"image": ("image", [blank(image)])})
    else:
        from rbridge.schema import Schema, example_rows
        columns, nrows = Schema(info.schema).encode({"data": example_rows(info.schema)}, 1)
        part = protocol.Part("warm-up", nrows, columns)
    with session.time_limit(info.name, seconds):
        outputs, _ = session.score(info.name, [part])
    if isinstance(outputs[0], dict):
        return outputs[0]["error"]["message"]
    info.sample_output = outputs[0]
    info.output_levels = outputs[0].levels
    return None


def _top_k_problem(spec: protocol.ModelSpec, info: protocol.ModelInfo) -> str | None:
    """top_k ranks a table of class scores: the model's answer must be one."""
    out = info.sample_output
    if not spec.top_k or out is None:
        return None
    if out.kind != "table" or not all(isinstance(v, np.ndarray) and v.dtype.kind == "f" for v in out.values):
        return ("top_k needs a table of class scores, one number per class (e.g. predict_proba, or R's "
                "type = \"prob\" in predict_args), but the model answers "
                + ("a single value per row" if out.kind == "vector" else "columns that are not all numbers"))
    return None


def _protect_gateway() -> None:
    """Make this worker, not the gateway, the OOM killer's first choice (raising needs no privilege)."""
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write("500")
    except OSError:
        pass


if __name__ == "__main__":
    sys.exit(main())
