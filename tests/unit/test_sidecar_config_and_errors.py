"""Sidecar config documents (JSON/YAML, schema + semantic checks with field paths) and the error
tree's mapping to HTTP status and OpenAI bodies — pure, no server."""

from __future__ import annotations

import json

import pytest

from sluice_sidecar import errors
from sluice_sidecar.config_source import ConfigError, parse
from sluice_sidecar.contract import FailureClass

GOOD_YAML = """
namespace: team-a
routes:
  - name: chat
    source: chat-route
    strategy: Failover
    backends:
      - {name: primary, provider: openai, model: gpt-4o-mini,
         credentials: {secretName: openai, key: api-key, file: openai/api-key}}
      - {name: local, provider: openai-compatible, model: llama, baseUrl: "http://vllm:8000/v1"}
    timeouts: {firstToken: 10, total: 60}
"""


def test_yaml_and_json_with_camel_case() -> None:
    cfg = parse(GOOD_YAML, name="c.yaml")
    assert cfg.routes[0].timeouts.first_token == 10
    again = parse(json.dumps(cfg.model_dump(mode="json", by_alias=True)))
    assert again == cfg and again.content_hash() == cfg.content_hash()


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("", "empty"),
        ("- a\n- b", "must be a mapping"),
        ("{broken", "not valid JSON/YAML"),
        (b"\xff\xfe", "not valid UTF-8"),
        (
            "namespace: x\nroutes: [{name: r, source: r, backends: [{name: b, provider: nope, "
            "model: m}]}]",
            "routes.0.backends.0.provider",
        ),
        (
            "namespace: x\nroutes: [{name: r, source: r, backends: []}]",
            "routes[0].backends: a route needs at least one backend",
        ),
        (
            "namespace: x\nroutes: [{name: r, source: r, timeouts: {total: -1}, backends: "
            "[{name: b, provider: mock, model: m}]}]",
            "routes[0].timeouts.total: must be positive",
        ),
        (
            "namespace: x\nroutes: [{name: r, source: r, backends: [{name: b, provider: mock, "
            "model: m, mock: {failureRate: 2}}]}]",
            "mock.failureRate",
        ),
        (
            "namespace: x\nroutes: [{name: r, source: r, backends: [{name: b, provider: openai, "
            "model: m, baseUrl: 'ftp://x'}]}]",
            "baseUrl: must start with http",
        ),
        ("namespace: x\nsurprise: 1", "surprise"),
    ],
)
def test_bad_documents_say_what_and_where(text: str | bytes, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(text, name="c.yaml")
    assert needle in str(info.value)
    assert str(info.value).startswith("c.yaml: ")


@pytest.mark.parametrize(
    ("status", "code", "message", "failure"),
    [
        (429, None, "", FailureClass.RATE_LIMITED),
        (500, None, "", FailureClass.SERVER_ERROR),
        (503, None, "", FailureClass.SERVER_ERROR),
        (504, None, "", FailureClass.TIMEOUT),
        (408, None, "", FailureClass.TIMEOUT),
        (400, "context_length_exceeded", "", FailureClass.CONTEXT_WINDOW_EXCEEDED),
        (
            400,
            None,
            "This model's maximum context length is 8192",
            FailureClass.CONTEXT_WINDOW_EXCEEDED,
        ),
        (400, "content_filter", "", FailureClass.CONTENT_FILTER),
        (400, None, "bad", None),
        (401, None, "", None),
        (404, None, "", None),
        (422, None, "", None),
    ],
)
def test_classify_status(
    status: int, code: str | None, message: str, failure: FailureClass | None
) -> None:
    assert errors.classify_status(status, code, message) is failure


def test_status_errors_map_to_client_statuses() -> None:
    assert errors.UpstreamStatusError(429, "m", retry_after=2.2).status == 429
    assert errors.UpstreamStatusError(429, "m", retry_after=2.2).headers() == {"Retry-After": "3"}
    assert errors.UpstreamStatusError(503, "m").status == 502
    e = errors.UpstreamStatusError(401, "m")
    assert e.status == 401 and not e.retry_same_backend and e.failure is None
    assert errors.UpstreamTimeout("t").status == 504
    assert errors.MissingCredential("k").status == 503


def test_error_body_shape() -> None:
    body = json.loads(errors.error_body(errors.InvalidField("messages[0].role", "bad")))
    assert body == {
        "error": {
            "message": "Invalid value for 'messages[0].role': bad",
            "type": "invalid_request_error",
            "param": "messages[0].role",
            "code": "invalid_value",
        }
    }


def test_sanitise() -> None:
    assert "HTML" in errors.sanitise("<html><body>502</body></html>")
    assert errors.sanitise("a\x00b\n c") == "a b c"
    assert len(errors.sanitise("x" * 1000)) <= 301
