"""A tool whose schema does not fit the emulator's call (`lookup` with `{"query": ...}`): the
agent must be told which argument and the schema, not the SDK's bare "Invalid arguments"."""

from anthropic.lib.tools import beta_tool

CALLS: list[int] = []


@beta_tool(name="lookup")
def lookup_ticket(ticket_id: int) -> str:
    """Look a ticket up.

    Args:
        ticket_id: the ticket's number
    """
    CALLS.append(ticket_id)
    return f"ticket {ticket_id}"
