"""Provider-specific tool-call state kept by the sidecar: Gemini's thought signatures.

Owns ``SignatureStore`` and ``short_id``. Gemini hands a ``thoughtSignature`` with each function
call (hundreds of characters of base64) and wants it back on the next turn; OpenAI limits tool-call
ids to 40 characters and Anthropic to ``^[a-zA-Z0-9_-]+$``, so the signature cannot ride in the id
a client echoes (it would break the next turn after a fallback). The client sees a short id
(``call_`` + 24 hex characters of a hash) valid for every provider; the signature stays here,
keyed by that id, for the next Gemini turn. The store is bounded (least recently used entries go
first) and per sidecar process: after a restart, or on another replica, a Gemini turn goes out
without the signature (older Gemini models do not need it; newer ones answer 400 for it).
Pure data: no IO.
"""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict

#: Entries kept (a signature is ~100-500 bytes: the store stays under a few MiB).
CAPACITY = 10_000
_VALID = re.compile(r"^[A-Za-z0-9_-]{1,40}$")


def short_id(seed: str) -> str:
    """A tool-call id every provider accepts (≤ 40 characters of ``[A-Za-z0-9_]``)."""
    return "call_" + hashlib.sha256(seed.encode()).hexdigest()[:24]


def portable(call_id: str) -> bool:
    """Whether ``call_id`` is valid as it is for OpenAI, Anthropic and Gemini."""
    return bool(_VALID.match(call_id))


class SignatureStore:
    """Short tool-call id → Gemini thought signature, bounded, least recently used out first."""

    __slots__ = ("_capacity", "_items")

    def __init__(self, capacity: int = CAPACITY) -> None:
        self._capacity = capacity
        self._items: OrderedDict[str, str] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, call_id: str, signature: str) -> None:
        self._items[call_id] = signature
        self._items.move_to_end(call_id)
        while len(self._items) > self._capacity:
            self._items.popitem(last=False)

    def get(self, call_id: str) -> str | None:
        sig = self._items.get(call_id)
        if sig is not None:
            self._items.move_to_end(call_id)
        return sig
