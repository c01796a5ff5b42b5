"""Prompt selection and rendering (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sluice_sidecar import prompts
from sluice_sidecar.contract import Prompt, PromptMessage, PromptVariable, PromptVersion
from sluice_sidecar.errors import InvalidField


def version(n: int, text: str = "Help with {{product}}: {{q}}", **params: object) -> PromptVersion:
    return PromptVersion(
        version=n,
        hash=f"h{n}",
        messages=(
            PromptMessage(role="system", content=f"v{n}"),
            PromptMessage(role="user", content=text),
        ),
        variables={
            "product": PromptVariable(default="Sluice"),
            "q": PromptVariable(required=True, max_length=20),
        },
        params=dict(params),
    )


PROMPT = Prompt(
    name="support",
    versions=(version(1), version(2, temperature=0.1)),
    labels={"production": 1, "canary": 2},
    split={"canary": 10},
)
PROMPTS = {"support": PROMPT}


def test_reference_from_metadata_or_header() -> None:
    body = {"metadata": {"prompt": "support@canary", "variables": {"q": "hi"}}}
    assert prompts.reference(body, None) == ("support@canary", {"q": "hi"})
    assert prompts.reference({}, "support") == ("support", {})
    assert prompts.reference({}, None) is None
    with pytest.raises(InvalidField) as err:
        prompts.reference({"metadata": {"prompt": 3}}, None)
    assert err.value.param == "metadata.prompt"


def test_production_label_and_split() -> None:
    assert prompts.choose(PROMPT, None, draw=0.5)[0].version == 1
    assert prompts.choose(PROMPT, "production", draw=0.05) == (PROMPT.versions[1], "canary")
    assert prompts.choose(PROMPT, "canary", draw=0.99)[0].version == 2
    assert prompts.choose(PROMPT, "2", draw=0.0) == (PROMPT.versions[1], None)


def test_unknown_label_version_and_prompt_are_400s_naming_the_field() -> None:
    for selector in ("beta", "9"):
        with pytest.raises(InvalidField) as err:
            prompts.choose(PROMPT, selector, 0.0)
        assert err.value.param == "metadata.prompt"
    with pytest.raises(InvalidField) as err:
        prompts.render({}, PROMPTS, "nope@production", {}, 0.5)
    assert "unknown prompt 'nope'" in str(err.value)


def test_render_fills_variables_appends_request_messages_and_applies_params() -> None:
    body = {
        "model": "chat",
        "messages": [{"role": "user", "content": "and also"}],
        "metadata": {"prompt": "support@canary", "variables": {"q": "reset?"}, "team": "a"},
        "temperature": 0.7,
    }
    out = prompts.render(body, PROMPTS, "support@canary", {"q": "reset?"}, 0.5)
    assert (out.name, out.version, out.label) == ("support", 2, "canary")
    assert out.body["messages"] == [
        {"role": "system", "content": "v2"},
        {"role": "user", "content": "Help with Sluice: reset?"},
        {"role": "user", "content": "and also"},
    ]
    assert out.body["temperature"] == 0.7  # the request's own value wins over params
    assert out.body["metadata"] == {"team": "a"}  # Sluice's keys are not forwarded
    assert "metadata" not in prompts.render({}, PROMPTS, "support", {"q": "x"}, 0.5).body


def test_required_missing_and_too_long_variables_are_400s() -> None:
    with pytest.raises(InvalidField) as err:
        prompts.render({}, PROMPTS, "support", {}, 0.5)
    assert err.value.param == "metadata.variables.q"
    with pytest.raises(InvalidField) as err:
        prompts.render({}, PROMPTS, "support", {"q": "x" * 21}, 0.5)
    assert "maxLength 20" in str(err.value)


@given(st.text(max_size=20))
def test_values_are_inserted_literally_never_re_expanded(value: str) -> None:
    out = prompts.render({}, PROMPTS, "support@1", {"q": value, "product": "{{q}}"}, 0.5)
    assert out.body["messages"][1]["content"] == f"Help with {{{{q}}}}: {value}"
