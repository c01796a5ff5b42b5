"""Provider API keys, read from files in the secrets directory and re-read on rotation.

Owns the key cache. A key is the stripped content of ``<secrets_dir>/<CredentialRef.file>``. Each
file is stat-ed at most once per ``recheck_seconds`` (the kubelet swaps a ``..data`` symlink on
rotation, which changes the inode behind the path) and re-read only when its identity changed, so
the hot path costs a dictionary look-up. A missing, empty or escaping path raises
``MissingCredential`` for that backend only; ``missing`` lists the backends whose key cannot be
read, for the usage report (the operator has no access to Secrets, so the sidecars tell it).
Keys are never logged.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

from .clock import Clock
from .contract import CredentialRef, Route
from .errors import MissingCredential


@dataclass(slots=True)
class _Entry:
    value: str | None
    signature: tuple[int, int, int] | None
    checked_at: float


def usable(text: str) -> str | None:
    """A key file's content as a key: stripped of surrounding whitespace (a trailing newline is
    the usual case); None when nothing is left or what is left cannot go into an HTTP header
    (a line break or another control character inside it: two keys in one file, a pasted
    certificate), so the backend answers ``missing_credential`` and the request falls over."""
    value = text.strip()
    if not value or not value.isprintable() or not value.isascii():
        return None
    return value


class Credentials:
    def __init__(
        self, secrets_dir: str | os.PathLike[str] | None, clock: Clock, recheck_seconds: float = 1.0
    ):
        self._dir = os.fspath(secrets_dir) if secrets_dir is not None else None
        self._clock = clock
        self._recheck = recheck_seconds
        self._cache: dict[str, _Entry] = {}

    def get(self, ref: CredentialRef, backend: str) -> str:
        """The key for ``ref``; raises ``MissingCredential`` naming the backend and file."""
        entry = self._entry(ref.file)
        if entry.value is None:
            raise MissingCredential(
                f"No API key for backend '{backend}': file '{ref.file}' (Secret "
                f"'{ref.secret_name}', key '{ref.key}') is missing, empty or unusable "
                "(a line break or control character inside the key) in the secrets directory.",
                backend=backend,
            )
        return entry.value

    def readable(self, ref: CredentialRef) -> bool:
        """Whether ``ref``'s key can be read now (for the usage report; re-stats the file at most
        once per ``recheck_seconds``, like ``get``). Never raises."""
        return self._entry(ref.file).value is not None

    def missing(self, routes: Iterable[Route]) -> set[tuple[str, str]]:
        """(route, backend) of every backend of ``routes`` whose API key cannot be read now."""
        return {
            (route.name, backend.name)
            for route in routes
            for backend in route.backends
            if backend.credentials is not None and not self.readable(backend.credentials)
        }

    def known(self) -> tuple[str, ...]:
        """Every key value read so far (the scrubber removes them from upstream text)."""
        return tuple(e.value for e in self._cache.values() if e.value is not None)

    def _entry(self, rel: str) -> _Entry:
        now = self._clock.now()
        entry = self._cache.get(rel)
        if entry is None or now - entry.checked_at >= self._recheck:
            entry = self._refresh(rel, entry, now)
        return entry

    def _refresh(self, rel: str, old: _Entry | None, now: float) -> _Entry:
        path = self._path(rel)
        signature: tuple[int, int, int] | None = None
        value: str | None = None
        if path is not None:
            try:
                st = os.stat(path)
                signature = (st.st_ino, st.st_mtime_ns, st.st_size)
                if old is not None and old.signature == signature:
                    old.checked_at = now
                    return old
                with open(path, encoding="utf-8") as fh:
                    value = usable(fh.read())
            except (OSError, UnicodeDecodeError):
                value, signature = None, None
        entry = _Entry(value, signature, now)
        self._cache[rel] = entry
        return entry

    def _path(self, rel: str) -> str | None:
        if self._dir is None or os.path.isabs(rel):
            return None
        norm = os.path.normpath(rel)
        if norm.startswith(".."):
            return None
        return os.path.join(self._dir, norm)
