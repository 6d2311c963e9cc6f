"""Durable state: deliveries, tracked sessions, handler runs. Knows SQL, never HTTP."""
