"""A local Managed Agents API: the subset idlehook uses, webhooks signed like Anthropic's."""
