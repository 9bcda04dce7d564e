"""ASGI middleware in front of the service: optional bearer-token auth and a request-body limit."""

from __future__ import annotations

import hmac
import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the ASGI callables' types (starlette comes with BentoML)
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Probes stay open so an orchestrator can check a service whose token it does not hold.
OPEN_PATHS = frozenset({"/healthz", "/livez", "/readyz"})
MAX_BODY_BYTES = 64 * 1024
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
JSON = "application/json"


async def _reply(send: Send, status: int, message: str,
                 headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()), *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


class Guard:
    """Rejects unauthenticated (401), non-JSON (415) and oversized (413) requests before
    BentoML parses them.

    Settings are read on the first request, in the worker (the service process is the
    boundary), so importing the service module has no side effects.
    """

    def __init__(self, app: ASGIApp, token: str | None = None, max_body: int | None = None,
                 load: bool = True) -> None:
        self.app = app
        self._token = token
        self._max_body = max_body or MAX_BODY_BYTES
        self._loaded = not load

    def _configure(self) -> None:
        from recops.config import load_settings

        s = load_settings()
        if s.serving.auth_token is not None:
            self._token = s.serving.auth_token.get_secret_value()
        self._loaded = True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if not self._loaded:
            self._configure()
        headers = dict(scope.get("headers") or [])
        if self._token and scope["path"] not in OPEN_PATHS:
            got = headers.get(b"authorization", b"").decode("latin-1")
            scheme, _, value = got.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip(), self._token):
                return await _reply(send, 401, "missing or wrong bearer token (Authorization: "
                                    "Bearer <serving.auth_token>)",
                                    [(b"www-authenticate", b"Bearer")])
        if scope.get("method") in BODY_METHODS:
            # Every API takes JSON. BentoML would also parse forms, and answers 500 to a
            # multipart body without a boundary: refuse other media types here, with a 415.
            media = headers.get(b"content-type", b"application/json").decode("latin-1")
            if media.split(";")[0].strip().lower() != JSON:
                return await _reply(send, 415, f"Content-Type {media!r} is not supported: send "
                                    f"the body as JSON with Content-Type: {JSON}")
        length = headers.get(b"content-length")
        if length is not None:
            try:
                n = int(length)
            except ValueError:
                return await _reply(send, 400, "Content-Length is not a number")
            if n > self._max_body:
                return await _reply(send, 413, f"request body of {n} bytes is over the limit "
                                    f"of {self._max_body} bytes")
        if length is None and scope.get("method") in BODY_METHODS:
            # A chunked body carries no length: read it here, up to the limit, and replay it
            # (an error raised inside BentoML's handler would surface as a 500, not a 413).
            chunks, seen = [], 0
            while True:
                msg = await receive()
                if msg["type"] != "http.request":
                    return  # the client went away
                seen += len(msg.get("body", b""))
                if seen > self._max_body:
                    return await _reply(send, 413, f"request body is over the limit of "
                                        f"{self._max_body} bytes")
                chunks.append(msg.get("body", b""))
                if not msg.get("more_body"):
                    break
            body = b"".join(chunks)
            sent = False

            async def replay() -> Message:
                nonlocal sent
                if not sent:
                    sent = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()

            return await self.app(scope, replay, send)
        return await self.app(scope, receive, send)
