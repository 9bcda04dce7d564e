"""The HTTP contract pieces without a server: error bodies and the OpenAPI document."""

from __future__ import annotations

import json

from serving.contract import ERRORS, document, unwrap_error


def test_a_listed_error_becomes_the_declared_object() -> None:
    assert json.loads(unwrap_error(b'[{"error": "item_id 7 is unknown"}]')) == {
        "error": "item_id 7 is unknown"}


def test_other_bodies_pass_unchanged() -> None:
    for body in (b'{"error": "x"}', b"Method Not Allowed", b"[1, 2]", b'[{"a": 1}]', b""):
        assert unwrap_error(body) == body


def test_document_declares_errors_on_apis_only() -> None:
    spec = {"paths": {
        "/readyz": {"get": {"responses": {"200": {}}}},
        "/recommend": {"post": {"x-bentoml-name": "recommend", "responses": {"200": {}},
                                "requestBody": {"content": {}}}}}}
    out = document(spec)
    assert set(out["paths"]["/recommend"]["post"]["responses"]) == {"200"} | {
        str(c) for c in ERRORS}
    assert out["paths"]["/recommend"]["post"]["requestBody"]["required"] is True
    assert out["paths"]["/readyz"]["get"]["responses"] == {"200": {}}
    assert out["components"]["schemas"]["Error"]["required"] == ["error"]
