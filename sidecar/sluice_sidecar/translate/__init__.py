"""Pure translators, one per (client dialect, backend dialect) pair, in the manner of Envoy AI
Gateway's ``internal/translator``.

Owns ``pick``: the table that names the translator for a try. A pair's name is
``<client>_<backend>``:

=====================  =====================================  ================================
pair                   backend half (request, answer)          client half (answer reshaped)
=====================  =====================================  ================================
openai_openai          ``openai_openai.DIALECT`` (pass-through)  none
openai_anthropic       ``openai_anthropic.DIALECT``             none
openai_gemini          ``openai_gemini.DIALECT``                none
anthropic_anthropic    ``anthropic_anthropic.DIALECT``          none (pass-through)
anthropic_openai       ``openai_openai.DIALECT``                ``anthropic_openai.RESHAPE``
anthropic_gemini       ``openai_gemini.DIALECT``                ``anthropic_openai.RESHAPE``
responses_openai       ``responses_openai.DIALECT``             none (pass-through)
responses_<backend>    ``responses_chat.Stateless(<chat>)``     ``responses_chat.RESHAPE``
completions_openai     ``completions_openai.DIALECT``           ``completions_openai.RESHAPE``
completions_mistral    ``completions_openai.MISTRAL`` (FIM)     ``completions_openai.RESHAPE``
=====================  =====================================  ================================

A text completions client (``POST /v1/completions``) has pairs only to ``openai``,
``openai-compatible`` (its body passed through) and ``mistral`` (its FIM API); a route with none
of these is a 400 (``Gateway.resolve``). Its answers are canonical chat completions between the
halves, so the stages' stream filters read the generated text.

A Responses API client (``POST /v1/responses``) is passed through to an OpenAI backend while no
stage rewrote its request (``responses_openai``: stateful features work there); otherwise, and
for every other provider, it goes through the canonical chat body (``responses_openai+canonical``
… ``responses_gemini``), where what needs OpenAI's own Responses API is a 400 saying so.

An Anthropic client whose request a stage rewrote (a rendered prompt, a redaction) cannot be
passed through: its pair to an Anthropic backend is then ``openai_anthropic``'s backend half with
``anthropic_openai``'s client half (named ``anthropic_anthropic+canonical``). The ``mock``
provider answers like an OpenAI backend. The client APIs are ``openai_openai.API``,
``anthropic_openai.API``, ``responses_chat.API`` and ``completions_openai.API``. Nothing here
does IO.
"""

from __future__ import annotations

from ..contract import Provider
from . import (
    anthropic_anthropic,
    anthropic_openai,
    completions_openai,
    openai_anthropic,
    openai_gemini,
    openai_openai,
    responses_chat,
    responses_openai,
)
from .base import (
    Answer,
    BackendDialect,
    Call,
    ClientAPI,
    Reshaper,
    StreamDecoder,
    StreamReshaper,
    Translator,
)
from .signatures import SignatureStore

__all__ = [
    "ANTHROPIC",
    "COMPLETIONS",
    "OPENAI",
    "RESPONSES",
    "Answer",
    "BackendDialect",
    "Call",
    "ClientAPI",
    "Reshaper",
    "SignatureStore",
    "StreamDecoder",
    "StreamReshaper",
    "Translator",
    "pick",
]

OPENAI: ClientAPI = openai_openai.API
ANTHROPIC: ClientAPI = anthropic_openai.API
RESPONSES: ClientAPI = responses_chat.API
COMPLETIONS: ClientAPI = completions_openai.API

_BACKENDS: dict[Provider, BackendDialect] = {
    Provider.OPENAI: openai_openai.DIALECT,
    Provider.MISTRAL: openai_openai.DIALECT,
    Provider.OPENAI_COMPATIBLE: openai_openai.DIALECT,
    Provider.MOCK: openai_openai.DIALECT,
    Provider.ANTHROPIC: openai_anthropic.DIALECT,
    Provider.GEMINI: openai_gemini.DIALECT,
}
_OPENAI_PAIRS = {p: Translator(f"openai_{b.name}", b) for p, b in _BACKENDS.items()}
_ANTHROPIC_PAIRS = {
    p: Translator(
        "anthropic_anthropic+canonical" if b.name == "anthropic" else f"anthropic_{b.name}",
        b,
        anthropic_openai.RESHAPE,
    )
    for p, b in _BACKENDS.items()
}
_PASS_THROUGH = Translator("anthropic_anthropic", anthropic_anthropic.DIALECT, canonical=False)
_RESPONSES_PAIRS = {
    p: Translator(
        "responses_openai+canonical" if p is Provider.OPENAI else f"responses_{b.name}",
        responses_chat.Stateless(b),
        responses_chat.RESHAPE,
    )
    for p, b in _BACKENDS.items()
}
_RESPONSES_PASS_THROUGH = Translator("responses_openai", responses_openai.DIALECT, canonical=False)
_COMPLETIONS_PAIRS = {
    p: Translator(
        "completions_mistral" if p is Provider.MISTRAL else "completions_openai",
        b,
        completions_openai.RESHAPE,
    )
    for p, b in completions_openai.BACKENDS.items()
}


def pick(client: ClientAPI, provider: Provider, *, native: bool) -> Translator | None:
    """The translator for a try from ``client`` to a backend of ``provider``; ``native`` says
    the client's own body is still what should be sent (no stage rewrote it). None when no
    pair exists (a provider this version cannot speak)."""
    if client is OPENAI:
        return _OPENAI_PAIRS.get(provider)
    if client is COMPLETIONS:
        return _COMPLETIONS_PAIRS.get(provider)
    if client is RESPONSES:
        if provider is Provider.OPENAI and native:
            return _RESPONSES_PASS_THROUGH
        return _RESPONSES_PAIRS.get(provider)
    if provider is Provider.ANTHROPIC and native:
        return _PASS_THROUGH
    return _ANTHROPIC_PAIRS.get(provider)
