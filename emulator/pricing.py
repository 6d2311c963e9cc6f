"""The emulator's own price table. Pure.

A session budget needs a public list price for every model the session can run, so the
table's one question is which model ids are priced (else `model_not_budgetable`). Tokens are
metered at one list price for every model (Sonnet's), so token costs stay comparable from test
to test whatever model an agent names.
"""

PRICED_PREFIXES = ("claude-opus-", "claude-sonnet-", "claude-haiku-", "claude-3")
INPUT_USD_PER_MTOK = 3.0
OUTPUT_USD_PER_MTOK = 15.0


def has_list_price(model_id: str) -> bool:
    return model_id.startswith(PRICED_PREFIXES)


def token_usd(input_tokens: int, output_tokens: int) -> float:
    return (input_tokens * INPUT_USD_PER_MTOK + output_tokens * OUTPUT_USD_PER_MTOK) / 1_000_000


def cents(usd: float) -> int:
    """Whole cents, as `list_cost.amount` carries them."""
    return round(usd * 100)
