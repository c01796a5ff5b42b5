"""The prompt stage: a request that names a PromptTemplate (``metadata.prompt``, or the
``x-sluice-prompt`` header folded into it by ``from_headers``) is rendered with the chosen version
before anything else looks at it.

Owns ``PromptStage`` (``on_request``: the version chosen by label or number, with the template's
traffic split drawn from the stage's random generator; the rendered body replaces ``ex.body``;
``ex.prompt_ref`` and ``ex.prompt_version`` say what ran, for the ``x-sluice-prompt-version``
header and the audit record). The pure rendering is ``render``.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

from ..contract import Prompt
from ..exchange import Exchange
from ..stage import Stage
from .render import (
    HEADER,
    PRODUCTION,
    VARIABLES_HEADER,
    Rendered,
    choose,
    fill,
    from_headers,
    reference,
    render,
)

__all__ = [
    "HEADER",
    "PRODUCTION",
    "VARIABLES_HEADER",
    "PromptStage",
    "Rendered",
    "choose",
    "fill",
    "from_headers",
    "reference",
    "render",
]


class PromptStage(Stage):
    """Renders ``metadata.prompt`` into the request (chat requests only)."""

    name = "prompts"
    __slots__ = ("_by_name", "_rng", "_source")

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._source: Sequence[Prompt] | None = None
        self._by_name: Mapping[str, Prompt] = {}

    def _prompts(self, prompts: Sequence[Prompt]) -> Mapping[str, Prompt]:
        if prompts is not self._source:
            self._by_name = {p.name: p for p in prompts}
            self._source = prompts
        return self._by_name

    async def on_request(self, ex: Exchange) -> None:
        # without ``metadata`` (where ``from_headers`` puts a header's prompt) none is named
        if "metadata" not in ex.body or ex.operation != "chat" or ex.config is None:
            return
        found = reference(ex.body, None)
        if found is None:
            return
        ref, variables = found
        rendered = render(
            ex.body, self._prompts(ex.config.prompts), ref, variables, self._rng.random()
        )
        ex.body = rendered.body  # a new dict: the client's own body is no longer what is sent
        ex.prompt_ref = f"{rendered.name}@{rendered.label or rendered.version}"
        ex.prompt_version = rendered.version
