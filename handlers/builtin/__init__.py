"""Built-in handler plugins: log, archive, forward, delete."""
