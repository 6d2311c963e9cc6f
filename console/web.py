"""`GET /`: the read-only operator page, and `GET|POST /login` to get a browser in.

Behind the same token as the management API (console/auth.py). A browser cannot send a bearer
header, so `POST /login` (the form) sets an HttpOnly, SameSite=Strict cookie holding an HMAC of
the token. `GET /?token=...` does the same once and redirects to the bare `/`, for a bookmark or
a headless browser; the form is preferable, since a URL can end up in a proxy's access log.
With no token configured every route answers 503: the page is never open.
"""

import asyncio
import dataclasses
import importlib
import secrets
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs

import structlog
from pydantic import SecretStr
from sqlalchemy.engine import Engine
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from console import auth, web_page
from console.recovery_api import unmatched_count
from store import dashboard
from store.models import utcnow

log = structlog.get_logger(__name__)

COOKIE_MAX_AGE = 7 * 24 * 3600
MAX_FORM_BYTES = 4096
UNCONFIGURED = "set IDLEHOOK_API_TOKEN to use this page"


def _headers(nonce: str) -> dict[str, str]:
    # Nothing loads from elsewhere; the only script is ours, by nonce.
    csp = (
        "default-src 'none'; "
        f"style-src 'nonce-{nonce}'; script-src 'nonce-{nonce}'; "
        "connect-src 'self'; img-src 'self' data:; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    )
    return {
        "content-security-policy": csp,
        "cache-control": "no-store",
        "referrer-policy": "no-referrer",
        "x-content-type-options": "nosniff",
        "x-frame-options": "DENY",
    }


def _page(html_for: Callable[[str], str], status: int = 200) -> HTMLResponse:
    nonce = secrets.token_urlsafe(16)
    return HTMLResponse(html_for(nonce), status_code=status, headers=_headers(nonce))


def _unconfigured() -> HTMLResponse:
    return _page(lambda n: web_page.message_page("idlehook", UNCONFIGURED, n), 503)


def _login_form(status: int = 200, error: str = "") -> HTMLResponse:
    return _page(
        lambda n: web_page.message_page(
            "idlehook: sign in", "Enter the API token.", n, form=True, error=error
        ),
        status,
    )


def _signed_in(request: Request, token: SecretStr) -> Response:
    # No referrer: the URL we came from may carry `?token=`.
    headers = {"cache-control": "no-store", "referrer-policy": "no-referrer"}
    response = RedirectResponse("/", status_code=303, headers=headers)
    response.set_cookie(
        auth.COOKIE_NAME,
        auth.cookie_value(token),
        max_age=COOKIE_MAX_AGE,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


def pending_approvals_source() -> Callable[[Engine], Sequence[Any]] | None:
    """`store.approvals.list_pending`, when the approvals feature is installed."""
    try:
        module = importlib.import_module("store.approvals")
    except ImportError:
        return None
    source = getattr(module, "list_pending", None)
    return source if callable(source) else None


async def _pending(
    engine: Engine, source: Callable[[Engine], Sequence[Any]] | None
) -> Sequence[Any] | None:
    if source is None:
        return None
    try:
        return await asyncio.to_thread(source, engine)
    except Exception as exc:  # the rest of the page is still worth showing
        log.warning("web.approvals_unavailable", error=type(exc).__name__)
        return None


def web_routes(
    engine: Engine,
    api_token: SecretStr | None,
    *,
    now: Callable[[], datetime] = utcnow,
    limit: int = 50,
    billing_model: str = "running",
    routes: Sequence[Any] = (),
) -> list[Route]:
    """Routes for the receiver app: `/` and `/login`. `routes`: the `[[routes]]` rules, for
    the count of unmatched deliveries they would now route (Reroute unmatched)."""
    token = api_token if auth.configured(api_token) else None
    list_pending = pending_approvals_source()

    async def index(request: Request) -> Response:
        if token is None:
            return _unconfigured()
        given = request.query_params.get("token")
        if given is not None:
            if not auth.token_matches(given, token):
                log.info("web.login_refused", via="query")
                return _login_form(401, "That token is not valid.")
            log.info("web.login", via="query")
            return _signed_in(request, token)
        if not auth.authorised(request, token):
            if "authorization" in request.headers:
                return _login_form(401, "That token is not valid.")
            return RedirectResponse("/login", status_code=303)
        moment = now()
        view = await asyncio.to_thread(dashboard.load, engine, moment, limit)
        journal = getattr(request.app.state, "journal", None)
        if journal is not None:
            view = dataclasses.replace(view, journal=journal.stats())
        pending = await _pending(engine, list_pending)
        unmatched = await asyncio.to_thread(unmatched_count, engine, routes)
        return _page(
            lambda n: web_page.render(view, pending, n, billing_model, unmatched=unmatched)
        )

    async def login_form(request: Request) -> Response:
        if token is None:
            return _unconfigured()
        return _login_form()

    async def login(request: Request) -> Response:
        if token is None:
            return _unconfigured()
        raw = await request.body()
        if len(raw) > MAX_FORM_BYTES:
            return _login_form(413, "That form is too large.")
        fields = parse_qs(raw.decode("utf-8", "replace"))
        given = (fields.get("token") or [""])[0]
        if not auth.token_matches(given, token):
            log.info("web.login_refused", via="form")
            return _login_form(401, "That token is not valid.")
        log.info("web.login", via="form")
        return _signed_in(request, token)

    return [
        Route("/", index, methods=["GET"]),
        Route("/login", login_form, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
    ]
