"""R Bridge: serve R models saved as .rds as a fast, secure, real-time REST service.

The way of one POST /models/<name>/predict, file by file:
    server/front_granian.py    the HTTP front (Rust) hands the request to the gateway's WSGI app
    gateway/fastpath.py        scoring requests are answered here, before Flask (gateway/app.py)
    gateway/views_predict.py   score(): authenticate (gateway/auth.py), read the body, check the model
    schema.py                  rows -> typed columns, every bad value a 422 naming column and row
                               (an image model: gateway/imagebody.py takes the uploaded files out)
    pool/pool.py               Pool.predict queues a Job (pool/jobs.py) and waits for it
    pool/slot.py               a slot's thread takes it (with same-model batch-mates) to its worker
    pool/protocol.py           the typed messages that cross the process line (Score -> Scored)
    worker/main.py             the worker process's loop
    worker/rsession.py         embedded R: buffers -> data.frame -> the R code -> results
    worker/r/*.R               loading, schema, scoring and output in R (worker.R: one call per request)
                               (a Python model: worker/pysession.py; images decoded by worker/images.py)
Beside the path: gateway/ (sign-in, users, keys, throttle, OpenAPI, dashboard), models/ (the
registry owns model state; catalog, reload, fetch), server/ (parts built in order, HTTP fronts,
drain), settings.py, metrics.py, logs.py, cli.py, client.py. Only rbridge/worker imports rpy2,
and nothing else imports rbridge.worker (tests/unit/test_layout.py).
"""

__version__ = "0.1.0"
