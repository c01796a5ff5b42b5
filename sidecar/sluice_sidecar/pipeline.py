"""The request stages between "route resolved" and "backend chosen", composed in order.

Owns the composition of the pipeline hooks (``runtime.Hooks``) from the config source and the
pod's labels: first the PromptTemplate is rendered (``prompts``), then the input guardrails run
on the rendered request (``guardrails``), and last the budget reserves the worst-case cost of
what will really be sent (``budget``); on finish the budget settles. Each stage reads the config
that is current when the request arrives, so a config swap applies to the next request.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass

from . import budget, guardrails, prompts
from .clock import Clock
from .config_source import ConfigSource
from .exchange import Exchange
from .runtime import FinishHook, Hooks, RequestHook


@dataclass
class PromptStage:
    """Renders ``metadata.prompt`` into the request (chat requests only)."""

    source: ConfigSource
    rng: random.Random

    async def __call__(self, ex: Exchange) -> None:
        if ex.operation != "chat":
            return
        found = prompts.reference(ex.body, None)
        config = self.source.current
        if found is None or config is None:
            return
        ref, variables = found
        rendered = prompts.render(
            ex.body, {p.name: p for p in config.prompts}, ref, variables, self.rng.random()
        )
        ex.body = rendered.body  # a new dict: the client's own body is no longer what is sent
        ex.prompt_ref = f"{rendered.name}@{rendered.label or rendered.version}"
        ex.prompt_version = rendered.version


def build(
    source: ConfigSource,
    clock: Clock,
    pod_labels: Mapping[str, str],
    *,
    rng: random.Random | None = None,
    extra_finish: tuple[FinishHook, ...] = (),
) -> Hooks:
    """The hooks for one sidecar. ``extra_finish`` runs after settlement (e.g. usage reports)."""
    guards = guardrails.make_hooks(
        lambda: source.current.guardrails if source.current is not None else (), pod_labels
    )
    enforcer = budget.Enforcer((), pod_labels, clock, ())
    source.subscribe(enforcer.on_config)
    stages: tuple[RequestHook, ...] = (
        PromptStage(source, rng or random.Random()),  # noqa: S311 - traffic split, not secrets
        guards.before_backend,
        enforcer.before_backend,
    )
    return Hooks(before_backend=stages, on_finish=(enforcer.on_finish, *extra_finish))
