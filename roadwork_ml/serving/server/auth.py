"""Bearer-token access and the request size limit, as plain ASGI middleware (they act before
any body is read or parsed).

The token comes from ``ROADWORK_SERVE_TOKEN`` or a file (first line, whitespace stripped);
it is compared in constant time (:func:`hmac.compare_digest`). ``/v2/health/*`` stays open so
load balancers and orchestrators can probe; every other path answers 401 without it.
"""

from __future__ import annotations

import hmac
import json
import os
from pathlib import Path

TOKEN_ENV = "ROADWORK_SERVE_TOKEN"
OPEN_PREFIXES = ("/v2/health/",)


def load_token(token_file: str | Path | None = None, env: dict | None = None) -> str | None:
    """The token from ``token_file`` if given, else ``$ROADWORK_SERVE_TOKEN``; None if neither.
    An empty or too short token (< 16 characters) is refused."""
    env = os.environ if env is None else env
    if token_file is not None:
        text = Path(token_file).read_text().strip()
        token = text.splitlines()[0].strip() if text else ""
        where = str(token_file)
    elif env.get(TOKEN_ENV) is not None:
        token, where = env[TOKEN_ENV].strip(), f"${TOKEN_ENV}"
    else:
        return None
    if len(token) < 16:
        raise ValueError(f"the serve token from {where} must be at least 16 characters")
    return token


def token_matches(header: str | None, token: str) -> bool:
    """``Authorization: Bearer <token>``, compared in constant time."""
    if not header:
        return False
    scheme, _, given = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


async def send_json(send, status: int, payload: dict, headers: list[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BearerAuth:
    def __init__(self, app, token: str | None):
        self.app, self.token = app, token

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or self.token is None or scope["path"].startswith(OPEN_PREFIXES):
            return await self.app(scope, receive, send)
        auth = dict(scope["headers"]).get(b"authorization")
        if not token_matches(auth.decode("latin-1") if auth else None, self.token):
            return await send_json(
                send,
                401,
                {"error": "missing or wrong bearer token (Authorization: Bearer <token>)"},
                [(b"www-authenticate", b"Bearer")],
            )
        return await self.app(scope, receive, send)


class BodyTooLarge(Exception):
    """Raised while streaming a body past the limit; the app answers it with 413."""


class BodyLimit:
    """413 when ``Content-Length`` (or the bytes actually streamed) exceeds ``max_bytes``."""

    def __init__(self, app, max_bytes: int, on_reject=None):
        self.app, self.max_bytes, self.on_reject = app, max_bytes, on_reject

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        msg = {"error": f"request body larger than the server's limit of {self.max_bytes} bytes"}
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            if self.on_reject:
                self.on_reject(scope)
            return await send_json(send, 413, msg)
        seen = 0
        started = False

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge
            return message

        async def tracking_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                if self.on_reject:
                    self.on_reject(scope)
                await send_json(send, 413, msg)
