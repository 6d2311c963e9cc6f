"""The HTTP edge: signed-webhook intake, health, metrics, management endpoints."""
