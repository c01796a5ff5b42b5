"""How a try reaches a backend: the one HTTP adapter (``http``) and the built-in ``mock``.

Owns IO only: what goes on the wire and what comes back is the translator's (``translate``).
Every failure leaves here as an ``errors.UpstreamError``.
"""

from __future__ import annotations

from .base import Transport, Upstream

__all__ = ["Transport", "Upstream"]
