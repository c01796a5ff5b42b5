"""The client compatibility matrix: (client, feature) by backend → "works" or a documented
refusal. ``test_clients.py`` runs every cell; ``test_compat_docs.py`` checks docs/sidecar.md shows
exactly this table."""

from __future__ import annotations

BACKENDS = ("openai-compatible", "anthropic", "gemini")
#: (client, feature) → the backends it is run against, or the refusal documented for one.
MATRIX: dict[tuple[str, str], dict[str, str]] = {
    ("openai", "chat"): dict.fromkeys(BACKENDS, "works"),
    ("openai", "chat stream"): dict.fromkeys(BACKENDS, "works"),
    ("openai", "chat.completions.parse"): dict.fromkeys(BACKENDS, "works"),
    ("openai", "responses"): dict.fromkeys(BACKENDS, "works"),
    ("openai", "responses stream"): dict.fromkeys(BACKENDS, "works"),
    ("openai", "responses tools"): {
        "openai-compatible": "works",
        "anthropic": "works",
        "gemini": "works",
    },
    ("openai", "responses previous_response_id"): dict.fromkeys(
        BACKENDS, "400 (stateless; works on the OpenAI pass-through)"
    ),
    ("openai", "n=2"): {
        "openai-compatible": "works",
        "anthropic": "400 naming n (no fan-out)",
        "gemini": "works",
    },
    ("openai", "embeddings"): {
        "openai-compatible": "works",
        "anthropic": "400 (no embeddings backend on the route)",
        "gemini": "400 (no embeddings backend on the route)",
    },
    ("openai", "completions (unary, stream, FIM suffix)"): {
        "openai-compatible": "works",
        "anthropic": "400 (no completions backend on the route)",
        "gemini": "400 (no completions backend on the route)",
    },
    ("anthropic", "messages"): dict.fromkeys(BACKENDS, "works"),
    ("anthropic", "messages stream"): dict.fromkeys(BACKENDS, "works"),
    ("anthropic", "tools"): dict.fromkeys(BACKENDS, "works"),
    ("anthropic", "messages.parse"): dict.fromkeys(BACKENDS, "works"),
    ("anthropic", "count_tokens"): {
        "openai-compatible": "works (estimate)",
        "anthropic": "works",
        "gemini": "works (estimate)",
    },
    ("openai-agents", "responses mode, tool + output_type"): dict.fromkeys(BACKENDS, "works"),
    ("openai-agents", "chat mode, tool + output_type"): dict.fromkeys(BACKENDS, "works"),
    ("langchain-openai", "invoke"): dict.fromkeys(BACKENDS, "works"),
    ("langchain-openai", "with_structured_output"): dict.fromkeys(BACKENDS, "works"),
    ("langchain-openai", "use_responses_api"): dict.fromkeys(BACKENDS, "works"),
    ("ai-sdk", "generateText"): dict.fromkeys(BACKENDS, "works"),
    ("ai-sdk", "streamText"): dict.fromkeys(BACKENDS, "works"),
    ("ai-sdk", "generateObject"): dict.fromkeys(BACKENDS, "works"),
}


def render() -> str:
    """The Markdown table of ``MATRIX``."""
    lines = [
        "| client | feature | " + " | ".join(BACKENDS) + " |",
        "|---|---|" + "---|" * len(BACKENDS),
    ]
    for (client, feature), cells in MATRIX.items():
        lines.append(f"| {client} | {feature} | " + " | ".join(cells[b] for b in BACKENDS) + " |")
    return "\n".join(lines)
