"""Built-in price table: USD per million tokens for well-known provider models.

Owns default prices used when a backend sets no ``pricing``. Prices are list prices as of
``AS_OF`` and change; set ``spec.backends[].pricing`` to be exact. Lookup is by longest matching
prefix, so dated snapshots (``gpt-4o-2024-08-06``) find their family. Pure data and two functions.

Why a table kept by hand and not ``genai-prices`` (pydantic's price database on PyPI, MIT, bundled
snapshot, no network needed at run time): every install that compiles must give the same config
hash (the operator and ``sluice render``), so it would be a dependency of the base package, and its
package init imports httpx2 eagerly (with httpcore2, anyio, truststore, h11: none of which the
operator, the CLI or the sidecar image otherwise installs) and loads about 20 MB of price data. The
table is small, dated (``AS_OF``, carried into the compiled config and ModelRoute status) and a
model it lacks is named by the ``PriceUnknown`` condition.
"""

from __future__ import annotations

# model prefix: (input, output, cached input) USD per million tokens
PRICES: dict[str, tuple[float, float, float]] = {
    "gpt-4o-mini": (0.15, 0.60, 0.075),
    "gpt-4o": (2.50, 10.00, 1.25),
    "gpt-4.1-nano": (0.10, 0.40, 0.025),
    "gpt-4.1-mini": (0.40, 1.60, 0.10),
    "gpt-4.1": (2.00, 8.00, 0.50),
    "gpt-5-nano": (0.05, 0.40, 0.005),
    "gpt-5-mini": (0.25, 2.00, 0.025),
    "gpt-5": (1.25, 10.00, 0.125),
    "o4-mini": (1.10, 4.40, 0.275),
    "text-embedding-3-small": (0.02, 0.0, 0.0),
    "text-embedding-3-large": (0.13, 0.0, 0.0),
    "claude-opus-4": (15.00, 75.00, 1.50),
    "claude-sonnet-4": (3.00, 15.00, 0.30),
    "claude-haiku-4": (1.00, 5.00, 0.10),
    "claude-3-5-haiku": (0.80, 4.00, 0.08),
    "gemini-2.5-pro": (1.25, 10.00, 0.31),
    "gemini-2.5-flash-lite": (0.10, 0.40, 0.025),
    "gemini-2.5-flash": (0.30, 2.50, 0.075),
    "mistral-large": (2.00, 6.00, 2.00),
    "mistral-medium": (0.40, 2.00, 0.40),
    "mistral-small": (0.10, 0.30, 0.10),
}


#: The date the table was last checked against the providers' price pages.
AS_OF = "2026-11-27"


def known(model: str) -> bool:
    """Whether the table has a price for ``model`` (by prefix)."""
    return any(model.startswith(prefix) for prefix in PRICES)


def default_price(model: str) -> tuple[float, float, float]:
    """(input, output, cached input) USD per million tokens; zeros for unknown models."""
    best = ""
    for prefix in PRICES:
        if model.startswith(prefix) and len(prefix) > len(best):
            best = prefix
    return PRICES[best] if best else (0.0, 0.0, 0.0)
