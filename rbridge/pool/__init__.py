"""The pool of worker processes: slots, job queue, process handles, and the typed messages that cross to a worker.
Runs in the gateway process (its supervisor threads); may import rbridge's top-level modules, never rbridge.worker or rpy2."""
