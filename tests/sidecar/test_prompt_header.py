"""Prompt templates as a new user reaches for them: ``"messages": []`` when the template supplies
every message, the ``x-sluice-prompt`` header form, and a canary split that holds its ratio."""

from __future__ import annotations

import json
import math
import random

from sluice_sidecar import prompts
from sluice_sidecar.contract import Prompt, PromptMessage, PromptVariable, PromptVersion
from sluice_sidecar.prompts.render import MAX_VARIABLES_HEADER
from tests.fakes.openai_server import FakeOpenAI

from .conftest import StartSidecar, backend, config, route


def _version(n: int) -> PromptVersion:
    return PromptVersion(
        version=n,
        hash=f"h{n}",
        messages=(
            PromptMessage(role="system", content=f"v{n}: answer about {{{{product}}}}."),
            PromptMessage(role="user", content="{{question}}"),
        ),
        variables={
            "product": PromptVariable(default="Sluice"),
            "question": PromptVariable(required=True),
        },
    )


PROMPT = Prompt(
    name="support",
    versions=(_version(1), _version(2)),
    labels={"production": 1, "canary": 2},
    split={"canary": 10},
)


def _cfg(fake: FakeOpenAI) -> object:
    return config(route("chat", backend("a", fake))).model_copy(update={"prompts": (PROMPT,)})


def _empty(ref: str, **variables: str) -> dict[str, object]:
    """A chat body with no messages of its own, naming ``ref`` in metadata."""
    return {"model": "chat", "messages": [], "metadata": {"prompt": ref, "variables": variables}}


async def test_empty_messages_with_a_template_are_rendered(
    start_sidecar: StartSidecar, fake: FakeOpenAI
) -> None:
    sc = await start_sidecar(_cfg(fake), pod_labels={})
    status, headers, _ = await sc.post(
        "/v1/chat/completions", _empty("support@canary", question="Reset?")
    )
    assert status == 200
    assert headers["x-sluice-prompt-version"] == "support@2"
    assert fake.requests[0]["messages"] == [
        {"role": "system", "content": "v2: answer about Sluice."},
        {"role": "user", "content": "Reset?"},
    ]


async def test_empty_messages_without_a_template_are_still_refused(
    start_sidecar: StartSidecar, fake: FakeOpenAI
) -> None:
    sc = await start_sidecar(_cfg(fake), pod_labels={})
    status, _, body = await sc.post("/v1/chat/completions", {"model": "chat", "messages": []})
    assert status == 400
    assert body["error"]["param"] == "messages"
    assert fake.requests == []


async def test_header_form_names_the_template_and_its_variables(
    start_sidecar: StartSidecar, fake: FakeOpenAI
) -> None:
    sc = await start_sidecar(_cfg(fake), pod_labels={})
    status, headers, _ = await sc.post(
        "/v1/chat/completions",
        {"model": "chat", "messages": []},
        headers={
            prompts.HEADER: "support@2",
            prompts.VARIABLES_HEADER: json.dumps({"question": "Where?", "product": "Docs"}),
        },
    )
    assert status == 200
    assert headers["x-sluice-prompt-version"] == "support@2"
    assert fake.requests[0]["messages"][0]["content"] == "v2: answer about Docs."
    assert "metadata" not in fake.requests[0]


async def test_body_reference_wins_over_the_header(
    start_sidecar: StartSidecar, fake: FakeOpenAI
) -> None:
    sc = await start_sidecar(_cfg(fake), pod_labels={})
    status, headers, _ = await sc.post(
        "/v1/chat/completions",
        _empty("support@1", question="q"),
        headers={prompts.HEADER: "support@2"},
    )
    assert status == 200
    assert headers["x-sluice-prompt-version"] == "support@1"


async def test_oversized_or_malformed_variables_header_is_a_400(
    start_sidecar: StartSidecar, fake: FakeOpenAI
) -> None:
    sc = await start_sidecar(_cfg(fake), pod_labels={})
    for value in ("x" * (MAX_VARIABLES_HEADER + 1), "[1, 2]", "{not json"):
        status, _, body = await sc.post(
            "/v1/chat/completions",
            {"model": "chat", "messages": []},
            headers={prompts.HEADER: "support", prompts.VARIABLES_HEADER: value},
        )
        assert status == 400, value
        assert body["error"]["param"] == prompts.VARIABLES_HEADER
    assert fake.requests == []


def test_canary_split_holds_its_ratio_within_statistical_bounds() -> None:
    """10% of 20,000 production draws go to the canary: within 4 standard deviations."""
    rng = random.Random(1234)
    n, p = 20_000, 0.10
    canary = sum(prompts.choose(PROMPT, None, rng.random())[0].version == 2 for _ in range(n))
    sigma = math.sqrt(n * p * (1 - p))
    assert abs(canary - n * p) < 4 * sigma, canary
    # a version asked for by number or by another label is never split
    assert all(prompts.choose(PROMPT, "1", d)[0].version == 1 for d in (0.0, 0.05))
    assert all(prompts.choose(PROMPT, "canary", d)[0].version == 2 for d in (0.5, 0.99))
