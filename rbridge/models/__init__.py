"""The models folder: catalogue, the registry that owns the served models' state, hot reload, remote fetch.
Runs in the gateway process; may import rbridge's top-level modules and rbridge.pool, never rbridge.worker or rpy2."""
