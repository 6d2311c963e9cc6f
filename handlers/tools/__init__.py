"""Answering sessions that wait on their caller: custom tools (registry, runner) and tool uses
held for confirmation (policy, confirm). The `answer` handler (handlers/builtin/answer.py) drives
them from the `requires_action` webhook; no stream is ever held."""
