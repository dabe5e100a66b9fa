"""R Bridge: serve R models saved as .rds as a fast, secure, real-time REST service.

The way of one POST /predict, file by file: settings.py (configuration) -> app.py (routes,
auth, errors) -> validate.py (rows to typed columns) -> pool.py (queue, workers, supervision)
-> protocol.py (what crosses the process line) -> worker.py (the worker process) ->
rsession.py (embedded R, conversion) -> r/*.R (loading, schema, scoring, output).
The gateway side never imports rpy2; only worker.py and rsession.py do.
"""

__version__ = "0.1.0"
