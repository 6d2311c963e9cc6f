"""The management HTTP API and the operator page, mounted beside the webhook path.

Launch, follow up, raise a budget, decide a held tool call, and the page that shows it all,
behind the API token. They live apart from `receiver/` (the webhook edge depends on the store
alone); idlehook/wiring.py mounts their routes on the receiver's app.
"""
