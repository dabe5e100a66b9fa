"""A worker process: its loop, the embedded R session and the Python models' session (host.py), conversion, and the R code (r/*.R) as package data.
Runs only in worker processes (`python -m rbridge.worker`); the only place that imports rpy2, scikit-learn or onnxruntime; may import rbridge.pool.protocol and top-level modules."""
