"""Tools the end-to-end tests register by reference (`tests.tools.sample_tools:NAME`).

The emulator's scripted agent calls a custom tool named `lookup` with `{"query": "emulator"}`.
"""

from typing import Any

from anthropic.lib.tools import beta_async_tool, beta_tool

CALLS: list[dict[str, Any]] = []


@beta_tool
def lookup(query: str) -> str:
    """Look something up.

    Args:
        query: what to look up
    """
    CALLS.append({"query": query})
    return f"found {query} #{len(CALLS)}"


@beta_async_tool(name="lookup")
async def failing_lookup(query: str) -> str:
    """Look something up, and fail."""
    CALLS.append({"query": query})
    raise RuntimeError("backend unavailable (api_key=sk-secret-123)")
