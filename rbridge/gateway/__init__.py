"""The HTTP gateway: app factory, routes, authentication, throttling, bodies, OpenAPI, dashboard.
Runs in the gateway process; may import rbridge's top-level modules, rbridge.pool and rbridge.models, never rbridge.worker or rpy2."""
