"""Who may use the management endpoints and the web page: one check, shared by every route.

Two credentials are accepted, both derived from `Settings.api_token`:

- `Authorization: Bearer <token>`, for scripts and integrations;
- the web page's cookie, for browsers, which cannot send a bearer header. It holds an HMAC of
  the token, never the token: a copied cookie does not reveal the token, and rotating the token
  invalidates every cookie. Being a cookie, it rides along on cross-site requests too, so on
  anything but GET/HEAD the cookie path also demands `X-Idlehook-CSRF: 1` — a header a foreign
  page cannot add without a CORS preflight we never answer.

Comparisons are constant-time. No token configured means nobody gets in: never open.
"""

import hashlib
import hmac

from pydantic import SecretStr
from starlette.requests import HTTPConnection

COOKIE_NAME = "idlehook_session"
CSRF_HEADER = "x-idlehook-csrf"
# Binds the cookie to this purpose: the same token keyed for anything else yields another value.
_COOKIE_CONTEXT = b"idlehook web session v1"
_SAFE_METHODS = frozenset({"GET", "HEAD"})


def configured(token: SecretStr | None) -> bool:
    return token is not None and bool(token.get_secret_value())


def cookie_value(token: SecretStr) -> str:
    """What the session cookie holds for `token`: HMAC-SHA256 keyed by the token."""
    key = token.get_secret_value().encode()
    return hmac.new(key, _COOKIE_CONTEXT, hashlib.sha256).hexdigest()


def token_matches(given: str, token: SecretStr | None) -> bool:
    """A token typed into the login form (or sent once in `?token=`) against the configured one."""
    if not configured(token) or not given:
        return False
    assert token is not None
    return hmac.compare_digest(given.strip().encode(), token.get_secret_value().encode())


def bearer_ok(conn: HTTPConnection, token: SecretStr | None) -> bool:
    header = conn.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return token_matches(given, token)


def cookie_ok(conn: HTTPConnection, token: SecretStr | None, method: str = "GET") -> bool:
    if not configured(token):
        return False
    assert token is not None
    given = conn.cookies.get(COOKIE_NAME, "")
    if not given or not hmac.compare_digest(given.encode(), cookie_value(token).encode()):
        return False
    return method.upper() in _SAFE_METHODS or conn.headers.get(CSRF_HEADER, "") == "1"


def authorised(conn: HTTPConnection, token: SecretStr | None) -> bool:
    """Bearer header, or the page cookie (plus the CSRF header on non-GET requests)."""
    method = str(conn.scope.get("method", "GET"))
    return bearer_ok(conn, token) or cookie_ok(conn, token, method)
