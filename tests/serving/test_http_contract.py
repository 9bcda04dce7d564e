"""Bad input at the HTTP layer gets a clear 4xx (never a 5xx), and /docs.json says so."""

from __future__ import annotations

import httpx
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ENDPOINTS = ("/recommend", "/feedback", "/similar")
# Feedback from a user outside the data: the shared world's histories stay as other tests read them.
VALID = {"/recommend": {"user_id": 1}, "/feedback": {"user_id": 990_000_001, "item_id": 10,
                                                     "event_type": "view"},
         "/similar": {"item_id": 10}}


@pytest.fixture(scope="module")
def server(shared_server):
    """Read-only (its one feedback is from a user outside the data): the session's server."""
    return shared_server


def send(server, path, content, content_type):
    headers = {"content-type": content_type} if content_type else {}
    return httpx.post(server.url + path, content=content, headers=headers, timeout=30)


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize(("content", "content_type"), [
    (b"user_id=1", "multipart/form-data"),  # no boundary: BentoML alone answers 500
    (b'--b\r\nContent-Disposition: form-data; name="user_id"\r\n\r\n1\r\n--b--\r\n',
     "multipart/form-data; boundary=b"),
    (b"user_id=1", "application/x-www-form-urlencoded"),
    (b'{"user_id": 1}', "text/plain"),
])
def test_bodies_that_are_not_json_are_415(server, path, content, content_type):
    r = send(server, path, content, content_type)
    assert r.status_code == 415, r.text
    assert "Content-Type: application/json" in r.json()["error"]


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize(("content", "message"), [
    (b"", "Field required"),
    (b"[1, 2]", "Input should be an object"),
    (b'"user_id"', "Input should be an object"),
    (b"\xff\xfe{", "Invalid JSON"),
    (b'{"user_id": 1e400, "item_id": 1e400}', "valid integer"),
    (b'{"user_id": 1, "item_id": 10, "extra": 1}', "Extra inputs are not permitted"),
])
def test_malformed_json_is_400_with_the_reason(server, path, content, message):
    r = send(server, path, content, "application/json; charset=utf-8")
    assert r.status_code == 400, r.text
    body = r.json()
    assert isinstance(body, dict) and body["error"]
    assert message in r.text


@pytest.mark.parametrize("path", ENDPOINTS)
def test_json_with_or_without_content_type_is_served(server, path):
    import json

    for content_type in ("application/json", None):
        r = send(server, path, json.dumps(VALID[path]).encode(), content_type)
        assert r.status_code == 200, r.text


def test_errors_of_the_service_are_objects_as_declared(server):
    # BentoML wraps an API's own 4xx in a list; the declared shape is {"error": ...}.
    r = httpx.post(server.url + "/similar", json={"item_id": 7}, timeout=30)
    assert r.status_code == 404
    assert r.json() == {"error": "item_id 7 is unknown to the served model"}
    assert int(r.headers["content-length"]) == len(r.content)


def test_docs_declare_the_errors_and_refuse_unknown_fields(server):
    spec = httpx.get(server.url + "/docs.json", timeout=30).json()
    error = spec["components"]["schemas"]["Error"]
    assert error["required"] == ["error"]
    for path in ENDPOINTS:
        op = spec["paths"][path]["post"]
        assert {"400", "401", "404", "413", "415", "503"} <= set(op["responses"]), path
        assert op["responses"]["415"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/Error"}
        body = op["requestBody"]["content"]["application/json"]["schema"]
        assert body["additionalProperties"] is False, path
        assert op["requestBody"]["required"] is True
