"""The HTTP contract BentoML leaves out: error bodies shaped as declared, and every error answer
declared in the OpenAPI document (``/docs.json``)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from serving.guard import JSON, MAX_BODY_BYTES

if TYPE_CHECKING:  # the ASGI callables' types (starlette comes with BentoML)
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

DOCS_PATH = "/docs.json"
ERROR_REF = "#/components/schemas/Error"
ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "Error",
    "required": ["error"],
    "properties": {
        "error": {"type": "string", "description": "What was wrong, in one line"},
        # pydantic's list of field errors for a 400 from validation, absent otherwise
        "detail": {"description": "Details: the failing fields of a request, when known"},
    },
}
# Every answer other than 200 that the API endpoints give, and why.
ERRORS: dict[int, str] = {
    400: "Bad request: invalid JSON, a missing or unknown field, a field of the wrong type, or "
         "a value out of range (unknown fields are refused: additionalProperties is false)",
    401: "Missing or wrong bearer token (only when serving.auth_token is set)",
    404: "An item the served model does not know",
    413: f"Request body over {MAX_BODY_BYTES} bytes",
    415: f"Content-Type is not {JSON}",
    500: "Unexpected server error",
    503: "A store or model part the answer depends on is unavailable (the online store, the "
         "feedback log, the impression log; for /search also the text encoder or the items' "
         "text vectors); retry",
}


def document(spec: dict[str, Any]) -> dict[str, Any]:
    """BentoML's OpenAPI document with each API's error answers declared (one Error schema)."""
    spec.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    error = {JSON: {"schema": {"$ref": ERROR_REF}}}
    for item in spec.get("paths", {}).values():
        op = item.get("post")
        if not op or "x-bentoml-name" not in op:
            continue  # BentoML's probes and metrics, not our APIs
        op.setdefault("requestBody", {})["required"] = True
        for code, why in ERRORS.items():
            op["responses"][str(code)] = {"description": why, "content": error}
    return spec


def unwrap_error(body: bytes) -> bytes:
    """BentoML 1.4 sends an API's 4xx as ``[{"error": ...}]``, not the ``{"error": ...}`` it
    declares: send the object."""
    try:
        data = json.loads(body)
    except ValueError:
        return body
    if isinstance(data, list) and len(data) == 1 and isinstance(data[0], dict) \
            and "error" in data[0]:
        return json.dumps(data[0]).encode()
    return body


class Contract:
    """ASGI middleware: rewrites error bodies (``unwrap_error``) and the OpenAPI document
    (``document``); a 2xx answer of an API passes through untouched, unbuffered."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        docs = scope["path"] == DOCS_PATH and scope.get("method") == "GET"
        start: Message | None = None
        chunks: list[bytes] = []

        async def rewrite(msg: Message) -> None:
            nonlocal start
            if msg["type"] == "http.response.start" and (docs or msg["status"] >= 400):
                start = msg
                return
            if start is None or msg["type"] != "http.response.body":
                return await send(msg)
            chunks.append(msg.get("body", b""))
            if msg.get("more_body"):
                return
            body = b"".join(chunks)
            if docs and start["status"] == 200:
                body = json.dumps(document(json.loads(body))).encode()
            elif start["status"] >= 400:
                body = unwrap_error(body)
            headers = [(k, v) for k, v in start.get("headers", [])
                       if k.lower() != b"content-length"]
            await send({**start, "headers": [*headers,
                                             (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})

        return await self.app(scope, receive, rewrite)
