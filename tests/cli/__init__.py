"""The `idlehook` command line, run as an operator runs it: real processes, the emulator,
SQLite and PostgreSQL."""
