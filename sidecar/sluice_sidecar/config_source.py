"""Where the sidecar's ``SidecarConfig`` comes from: a fixed object or a watched file.

Owns loading (JSON or YAML), validation (the contract's schema plus the semantic checks a schema
cannot express), the atomic swap of the current config and the memory of the last good one. A
broken file never replaces a good config: it is reported through ``error`` (readiness, metrics)
while the last good config keeps serving. Watching is a cheap poll of ``os.stat`` once per
interval; ``stat`` follows symlinks, so the kubelet's ``..data`` symlink swap of a ConfigMap volume
and an editor's atomic rename are both seen. The operator's push stream is another
``ConfigSource`` (``controlplane_client.ControlPlaneConfig``).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from . import budget
from .clock import Clock, SystemClock
from .contract import Provider, SidecarConfig, Strategy

Listener = Callable[[SidecarConfig], None]
log = logging.getLogger("sluice.config")


class ConfigError(ValueError):
    """A config document that must not be served; the message says what and where."""


def parse(text: str | bytes, *, name: str = "config") -> SidecarConfig:
    """Parse and fully validate a config document (JSON or YAML); raise ``ConfigError``."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(
                f"{name}: not valid UTF-8 ({exc.reason} at byte {exc.start})"
            ) from exc
    if not text.strip():
        raise ConfigError(f"{name}: the file is empty")
    try:
        data: Any = json.loads(text) if text.lstrip().startswith("{") else _yaml(text)
    except ValueError as exc:
        raise ConfigError(f"{name}: not valid JSON/YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{name}: the document must be a mapping, not {type(data).__name__}")
    try:
        config = SidecarConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}"
            for e in exc.errors()[:10]
        )
        raise ConfigError(f"{name}: invalid SidecarConfig: {problems}") from exc
    problems_list = check(config)
    if problems_list:
        raise ConfigError(f"{name}: invalid SidecarConfig: {'; '.join(problems_list)}")
    return config


def _yaml(text: str) -> Any:
    """A YAML document. PyYAML is imported here, not at start-up: the operator writes JSON
    (about 1 MB of resident memory a pod does not carry); YAML is for hand-written files."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(str(exc)) from exc


def check(config: SidecarConfig) -> list[str]:
    """Semantic problems the schema cannot see, each with its field path. Pure."""
    out: list[str] = []
    seen_routes: set[str] = set()
    if config.limits.max_request_bytes <= 0:
        out.append("limits.maxRequestBytes: must be positive")
    limits = config.limits
    for fname, value in (
        ("defaultMaxTokens", limits.default_max_tokens),
        ("bodyTimeout", limits.body_timeout),
        ("maxResponseBytes", limits.max_response_bytes),
        ("maxStreamBytes", limits.max_stream_bytes),
    ):
        if value <= 0:
            out.append(f"limits.{fname}: must be positive")
    for i, route in enumerate(config.routes):
        where = f"routes[{i}]"
        if route.name in seen_routes:
            out.append(f"{where}.name: duplicate route '{route.name}'")
        seen_routes.add(route.name)
        if not route.backends:
            out.append(f"{where}.backends: a route needs at least one backend")
        names: set[str] = set()
        for j, b in enumerate(route.backends):
            bw = f"{where}.backends[{j}]"
            if b.name in names:
                out.append(f"{bw}.name: duplicate backend '{b.name}'")
            names.add(b.name)
            if b.weight < 0:
                out.append(f"{bw}.weight: must not be negative")
            if b.provider is Provider.OPENAI_COMPATIBLE and not b.base_url:
                out.append(f"{bw}.baseUrl: required for provider openai-compatible")
            if b.base_url and not b.base_url.startswith(("http://", "https://")):
                out.append(f"{bw}.baseUrl: must start with http:// or https://")
            if b.mock is not None and not 0.0 <= b.mock.failure_rate <= 1.0:
                out.append(f"{bw}.mock.failureRate: must be between 0 and 1")
        if (
            route.strategy is Strategy.WEIGHTED
            and route.backends
            and all(b.weight == 0 for b in route.backends)
        ):
            out.append(f"{where}.backends: Weighted needs at least one positive weight")
        t = route.timeouts
        for fname, value in (
            ("connect", t.connect),
            ("firstToken", t.first_token),
            ("idle", t.idle),
            ("total", t.total),
        ):
            if value <= 0:
                out.append(f"{where}.timeouts.{fname}: must be positive")
        if route.retry.attempts < 1:
            out.append(f"{where}.retry.attempts: must be at least 1")
        if route.retry.budget_ratio < 0 or route.retry.budget_min_per_second < 0:
            out.append(f"{where}.retry: budget must not be negative")
        if route.circuit_breaker.consecutive_failures < 1:
            out.append(f"{where}.circuitBreaker.consecutiveFailures: must be at least 1")
    out.extend(budget.check_budgets(config.budgets))
    return out


class ConfigSource:
    """A config that can change. ``current`` is the last good config (None until one loaded)."""

    def __init__(self) -> None:
        self.current: SidecarConfig | None = None
        self.current_hash: str | None = None
        self.error: str | None = None
        self.reload_failures = 0
        self.reloads = 0
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> None:
        """Call ``listener`` with every newly swapped-in config (and now, if one is loaded)."""
        self._listeners.append(listener)
        if self.current is not None:
            listener(self.current)

    def _swap(self, config: SidecarConfig) -> None:
        self.current = config
        self.current_hash = config.content_hash()
        self.error = None
        self.reloads += 1
        for listener in list(self._listeners):
            listener(config)

    def _fail(self, message: str) -> None:
        self.error = message
        self.reload_failures += 1
        log.warning(
            "config rejected (%s): %s",
            "keeping the last good config"
            if self.current is not None
            else "no config to serve yet",
            message,
        )

    def _swap_logged(self, config: SidecarConfig) -> None:
        self._swap(config)
        log.info("config %s loaded: %d routes", self.current_hash, len(config.routes))

    async def run(self) -> None:
        """Keep the config current until cancelled (nothing to do for a fixed config)."""


class StaticConfig(ConfigSource):
    """A config object handed in (``sluice run``, tests)."""

    def __init__(self, config: SidecarConfig) -> None:
        super().__init__()
        self._swap(config)


class FileConfig(ConfigSource):
    """A config file, polled for changes every ``interval`` seconds."""

    def __init__(self, path: str | Path, *, clock: Clock | None = None, interval: float = 1.0):
        super().__init__()
        self.path = Path(path)
        self._clock = clock or SystemClock()
        self._interval = interval
        self._signature: tuple[int, int, int] | None = None
        self.reload()

    def reload(self) -> bool:
        """Look at the file once; swap in its config if it changed and is valid. True if swapped."""
        try:
            st = os.stat(self.path)
        except OSError as exc:
            if self._signature is not None or self.error is None:
                self._signature = None
                self._fail(f"{self.path}: cannot read config file: {exc.strerror}")
            return False
        signature = (st.st_ino, st.st_mtime_ns, st.st_size)
        if signature == self._signature:
            return False
        self._signature = signature
        try:
            config = parse(self.path.read_bytes(), name=str(self.path))
        except OSError as exc:
            self._signature = None
            self._fail(f"{self.path}: cannot read config file: {exc.strerror}")
            return False
        except ConfigError as exc:
            self._fail(str(exc))
            return False
        if self.current is not None and config == self.current:
            self.error = None
            return False
        self._swap_logged(config)
        return True

    async def run(self) -> None:
        while True:
            await self._clock.sleep(self._interval)
            self.reload()


def source_from(config: str | Path | SidecarConfig | ConfigSource) -> ConfigSource:
    """Accept whatever the caller has: a path, a config object or a ready source."""
    if isinstance(config, ConfigSource):
        return config
    if isinstance(config, SidecarConfig):
        return StaticConfig(config)
    return FileConfig(config)
