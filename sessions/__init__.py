"""Sessions: launch with initial_events, pace under the rate limit, watch, reap, reconcile."""
