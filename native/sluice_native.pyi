"""Type stubs of the native text scanner (native/src/lib.rs)."""

from collections.abc import Callable

__version__: str

class Engine:
    def __init__(
        self,
        detectors: list[tuple[str, str, str, str, str, str | None]],
        tails: list[tuple[str, int]],
        any_pattern: str,
        separators: str,
        iban_lengths: dict[str, int],
        context_before: int,
        card_words: Callable[[str], bool],
        phone_words: Callable[[str], bool],
        span: type,
    ) -> None: ...
    def find(
        self, text: str, pos: int = 0, extents: list[tuple[int, int]] | None = None
    ) -> list[object]: ...
    def redactor(
        self,
        labels: list[str] | None = None,
        batch: int = 32,
        deny: Callable[[str, int], list[tuple[int, int, int]]] | None = None,
        deny_labels: list[str] = ...,
        window: int = 0,
    ) -> Redactor: ...

class Redactor:
    closed: bool
    @property
    def pending(self) -> int: ...
    def step(self, chunk: str) -> tuple[str, tuple[object, ...]]: ...
    def close(self, rest: str = "") -> tuple[str, tuple[object, ...]]: ...

class WordModel:
    def __init__(self, weights: dict[str, int], negations: list[str], scope: int) -> None: ...
    @staticmethod
    def load(path: str, negations: list[str], scope: int) -> tuple[float, int, WordModel]: ...
    @property
    def features(self) -> int: ...
    def total(self, text: str) -> tuple[int, int] | None: ...
    def total_twin(self, text: str, twin: str) -> tuple[int, int] | None: ...

class AnchorScan:
    def __init__(
        self, at_start: dict[str, tuple[tuple[str, ...], bool]], others: list[str]
    ) -> None: ...
    def scan(self, text: str) -> tuple[dict[str, list[int]], list[int]] | None: ...
