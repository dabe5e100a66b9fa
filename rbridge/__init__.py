"""R Bridge: serve R models saved as .rds as a fast, secure, real-time REST service.

The way of one POST /predict, file by file: settings.py (configuration) -> app.py (routes,
auth, errors) -> validate.py (rows to typed columns) -> pool.py (slots that supervise workers;
jobs.py is the queue, process.py a worker process) -> protocol.py (what crosses the process
line) -> worker.py (the worker process) -> rsession.py (embedded R, conversion) -> r/*.R
(loading, schema, scoring, output; r/worker.R is the one call per request).
Beside the path: auth.py, users.py, keys.py, throttle.py (who may call), catalog.py and
reload.py (the models folder), metrics.py, dashboard.py, openapi.py, logs.py, server.py and
tls.py (running it), client.py (for callers). The gateway never imports rpy2; only worker.py
and rsession.py do.
"""

__version__ = "0.1.0"
