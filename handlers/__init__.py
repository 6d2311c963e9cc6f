"""Handler plugins: the Protocol, discovery, routing, retries, the worker, built-ins."""
