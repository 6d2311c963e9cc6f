"""Benchmarks: scripts run by `bench/run`; never collected by pytest (outside tests/)."""
