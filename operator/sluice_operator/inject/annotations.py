"""Every ``sluice.dev/*`` label and annotation Sluice reads or writes, in one table.

Owns the table (key, kind, where, type, default, who sets it, doc), the parsers the injector uses
to read those keys, and the Markdown rendering of the table that ``docs/annotations.md`` and the
table section of ``docs/injection.md`` are generated from
(``python -m sluice_operator.inject.annotations --write``). A unit test fails when the docs are
stale, and when any module of the operator or the sidecar spells a ``sluice.dev/<key>`` string
that is not in the table: code reads keys through the constants below, never through ad-hoc
literals.

Parsing is pure and forgiving: a bad value is never an exception on the admission path; it is
ignored, the default is used, and the problem comes back as text for the pod's
``sluice.dev/inject-reason`` annotation and the admission warnings.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Literal

from .. import configmap

PREFIX = "sluice.dev/"


@dataclass(frozen=True)
class Key:
    """One row of the table."""

    key: str
    kind: Literal["label", "annotation"]
    on: str
    type: str
    default: str
    set_by: Literal["user", "injector", "operator"]
    doc: str


INJECT = Key(
    key="sluice.dev/inject",
    kind="label",
    on="Namespace, Pod",
    type="bool",
    default="unset (not injected)",
    set_by="user",
    doc="Opt-in. `true` on a Namespace injects every new pod in it; `true` on a Pod injects that "
    "pod in any namespace; `false` on a Pod opts it out of its namespace's injection. The "
    "webhook's selectors evaluate it, so pods that are not opted in never reach the webhook; the "
    "injector checks it again. Any other value counts as unset.",
)
STATUS = Key(
    key="sluice.dev/status",
    kind="annotation",
    on="Pod",
    type="JSON",
    default="",
    set_by="injector",
    doc="What was injected: `{version, sidecar, native, image, configMap, secrets}`. Its presence "
    "marks the pod as injected: a second call (re-invocation, or a copied pod spec) adds only "
    "missing pieces, never a second sidecar.",
)
INJECT_REASON = Key(
    key="sluice.dev/inject-reason",
    kind="annotation",
    on="Pod",
    type="string",
    default="",
    set_by="injector",
    doc='Why the injector did or did not inject, e.g. `injected: namespace "shop" has label '
    "sluice.dev/inject=true` or `skipped: hostNetwork pod ...`; bad override values are listed "
    "here too.",
)
INJECTED = Key(
    key="sluice.dev/injected",
    kind="label",
    on="Pod",
    type="bool",
    default="",
    set_by="injector",
    doc="`true` on every pod the injector gave the sidecar, so the fleet is one label selector "
    "away: `kubectl get pods -A -l sluice.dev/injected=true` (what `sluice status` lists).",
)
NATIVE_SIDECAR = Key(
    key="sluice.dev/native-sidecar",
    kind="annotation",
    on="Pod",
    type="bool",
    default="chart value `sidecar.native` (true)",
    set_by="user",
    doc="`true`: the sidecar is an init container with `restartPolicy: Always` (Kubernetes "
    "1.29+), answering before the app starts and stopped after it; `false`: a plain container "
    "(no start ordering, and Jobs never complete).",
)
PORT = Key(
    key="sluice.dev/port",
    kind="annotation",
    on="Pod",
    type="port",
    default="4000",
    set_by="user",
    doc="The sidecar's API port on 127.0.0.1 (the base URLs point at it). Change it when an app "
    "container already uses 4000.",
)
ADMIN_PORT = Key(
    key="sluice.dev/admin-port",
    kind="annotation",
    on="Pod",
    type="port",
    default="4001",
    set_by="user",
    doc="The sidecar's health and metrics port (`/healthz`, `/readyz`, `/metrics`).",
)
SET_BASE_URL = Key(
    key="sluice.dev/set-base-url",
    kind="annotation",
    on="Pod",
    type="bool",
    default="true",
    set_by="user",
    doc="Set `OPENAI_BASE_URL` and `ANTHROPIC_BASE_URL` on the app containers (never where the "
    "container's `env` already sets them). `false` leaves the app's environment alone.",
)
CPU_REQUEST = Key(
    key="sluice.dev/sidecar-cpu-request",
    kind="annotation",
    on="Pod",
    type="quantity",
    default="chart value `sidecar.resources.requests.cpu` (50m)",
    set_by="user",
    doc="CPU request of the sidecar.",
)
CPU_LIMIT = Key(
    key="sluice.dev/sidecar-cpu-limit",
    kind="annotation",
    on="Pod",
    type="quantity",
    default="chart value `sidecar.resources.limits.cpu` (1)",
    set_by="user",
    doc="CPU limit of the sidecar.",
)
MEMORY_REQUEST = Key(
    key="sluice.dev/sidecar-memory-request",
    kind="annotation",
    on="Pod",
    type="quantity",
    default="chart value `sidecar.resources.requests.memory` (64Mi)",
    set_by="user",
    doc="Memory request of the sidecar.",
)
MEMORY_LIMIT = Key(
    key="sluice.dev/sidecar-memory-limit",
    kind="annotation",
    on="Pod",
    type="quantity",
    default="chart value `sidecar.resources.limits.memory` (256Mi)",
    set_by="user",
    doc="Memory limit of the sidecar.",
)

CONFIG_HASH = Key(
    key="sluice.dev/config-hash",
    kind="annotation",
    on=f"ConfigMap {configmap.NAME}",
    type="string",
    default="",
    set_by="operator",
    doc=f"Hash of the compiled config in the namespace's `{configmap.NAME}` ConfigMap; sidecars "
    "report the hash they run, so rollout status compares the two.",
)

TABLE: tuple[Key, ...] = (
    INJECT,
    STATUS,
    INJECT_REASON,
    INJECTED,
    NATIVE_SIDECAR,
    PORT,
    ADMIN_PORT,
    SET_BASE_URL,
    CPU_REQUEST,
    CPU_LIMIT,
    MEMORY_REQUEST,
    MEMORY_LIMIT,
    CONFIG_HASH,
)

#: resource annotation → (section, resource name) in a container's ``resources``
RESOURCE_KEYS: dict[str, tuple[str, str]] = {
    CPU_REQUEST.key: ("requests", "cpu"),
    CPU_LIMIT.key: ("limits", "cpu"),
    MEMORY_REQUEST.key: ("requests", "memory"),
    MEMORY_LIMIT.key: ("limits", "memory"),
}


def by_key(key: str) -> Key | None:
    """The table row for ``key``, or None."""
    return next((k for k in TABLE if k.key == key), None)


# ----------------------------------------------------------------------------------------------
# Parsers
# ----------------------------------------------------------------------------------------------


def parse_bool(value: str | None) -> bool | None:
    """``"true"`` → True, ``"false"`` → False, anything else → None.

    Exact, like the webhook's label selectors: ``True`` or ``yes`` would match no selector, so
    they must not count here either.
    """
    if value == "true":
        return True
    if value == "false":
        return False
    return None


def parse_port(value: str) -> int | None:
    """A TCP port a non-root process may bind (1024-65535), or None."""
    text = value.strip()
    if not text.isdigit():
        return None
    port = int(text)
    return port if 1024 <= port <= 65535 else None


# The apiserver's quantity grammar: sign, digits with optional fraction, then either a binary
# SI suffix, a decimal SI suffix, or a decimal exponent.
_QUANTITY = re.compile(
    r"^(?P<num>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))"
    r"(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?[0-9]+)?$"
)
_SUFFIX = {
    "": Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
    "Pi": Decimal(2**50),
    "Ei": Decimal(2**60),
}


def parse_quantity(value: str) -> Decimal | None:
    """A Kubernetes resource quantity (``250m``, ``1.5``, ``128Mi``, ``1e3``) as a number.

    None when it is not a valid, non-negative quantity.
    """
    match = _QUANTITY.match(value.strip())
    if match is None:
        return None
    suffix = match.group("suffix") or ""
    try:
        number = Decimal(match.group("num"))
        scale = Decimal(f"1{suffix}") if suffix[:1] in ("e", "E") else _SUFFIX[suffix]
    except (InvalidOperation, KeyError):
        return None
    result = number * scale
    return result if result >= 0 else None


@dataclass(frozen=True)
class PodOverrides:
    """The per-pod settings a user may set with annotations; None means "use the default"."""

    native_sidecar: bool | None = None
    port: int | None = None
    admin_port: int | None = None
    set_base_url: bool | None = None
    resources: Mapping[str, Mapping[str, str]] = field(default_factory=dict)


def parse_pod_overrides(annotations: Mapping[str, str]) -> tuple[PodOverrides, list[str]]:
    """Read the override annotations of a pod; return them and a text per ignored bad value.

    Pure; never raises on user input.
    """
    problems: list[str] = []

    def flag(key: Key) -> bool | None:
        raw = annotations.get(key.key)
        if raw is None:
            return None
        parsed = parse_bool(raw)
        if parsed is None:
            problems.append(f"ignored {key.key}={raw!r}: expected true or false")
        return parsed

    def port(key: Key) -> int | None:
        raw = annotations.get(key.key)
        if raw is None:
            return None
        parsed = parse_port(raw)
        if parsed is None:
            problems.append(f"ignored {key.key}={raw!r}: expected a port from 1024 to 65535")
        return parsed

    resources: dict[str, dict[str, str]] = {}
    for key, (section, name) in RESOURCE_KEYS.items():
        raw = annotations.get(key)
        if raw is None:
            continue
        if parse_quantity(raw) is None:
            problems.append(f"ignored {key}={raw!r}: not a resource quantity (e.g. 100m, 128Mi)")
            continue
        resources.setdefault(section, {})[name] = raw.strip()

    api, admin = port(PORT), port(ADMIN_PORT)
    if api is not None and api == admin:
        problems.append(
            f"ignored {ADMIN_PORT.key}={admin}: it must differ from {PORT.key}; "
            "using the default admin port"
        )
        admin = None
    overrides = PodOverrides(
        native_sidecar=flag(NATIVE_SIDECAR),
        port=api,
        admin_port=admin,
        set_base_url=flag(SET_BASE_URL),
        resources=resources,
    )
    return overrides, problems


def merge_resources(
    defaults: Mapping[str, Mapping[str, str]], overrides: Mapping[str, Mapping[str, str]]
) -> tuple[dict[str, dict[str, str]], list[str]]:
    """Defaults with the per-pod overrides on top, as a container ``resources`` value.

    When the overrides of a resource would leave its request above its limit (which the apiserver
    rejects, so the pod would not be created at all), that resource's overrides are dropped and
    reported, and its defaults kept.
    """

    def combine(extra: Mapping[str, Mapping[str, str]]) -> dict[str, dict[str, str]]:
        out = {section: dict(values) for section, values in defaults.items() if values}
        for section, values in extra.items():
            if values:
                out.setdefault(section, {}).update(values)
        return out

    merged = combine(overrides)
    problems: list[str] = []
    kept = {section: dict(values) for section, values in overrides.items()}
    for name in sorted({n for values in overrides.values() for n in values}):
        request = merged.get("requests", {}).get(name)
        limit = merged.get("limits", {}).get(name)
        req_q = parse_quantity(request) if request is not None else None
        lim_q = parse_quantity(limit) if limit is not None else None
        if req_q is None or lim_q is None or req_q <= lim_q:
            continue
        for key, (section, resource) in RESOURCE_KEYS.items():
            if resource == name and name in kept.get(section, {}):
                problems.append(
                    f"ignored {key}={kept[section].pop(name)!r}: the {name} request {request} "
                    f"would exceed the limit {limit}"
                )
    return combine(kept), problems


# ----------------------------------------------------------------------------------------------
# Docs
# ----------------------------------------------------------------------------------------------

DOC_BEGIN = (
    "<!-- BEGIN GENERATED: annotations table "
    "(python -m sluice_operator.inject.annotations --write) -->"
)
DOC_END = "<!-- END GENERATED: annotations table -->"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_table() -> str:
    """The table as Markdown (header, one row per key)."""
    lines = [
        "| Key | Kind | On | Type | Default | Set by | Meaning |",
        "|---|---|---|---|---|---|---|",
    ]
    for k in TABLE:
        lines.append(
            "| "
            + " | ".join(
                _cell(x)
                for x in (
                    f"`{k.key}`",
                    k.kind,
                    k.on,
                    k.type,
                    k.default or "-",
                    k.set_by,
                    k.doc,
                )
            )
            + " |"
        )
    return "\n".join(lines) + "\n"


def render_section() -> str:
    """The generated section, between its markers."""
    return f"{DOC_BEGIN}\n\n{render_table()}\n{DOC_END}"


def render_markdown() -> str:
    """The whole of ``docs/annotations.md``."""
    return (
        "# Labels and annotations\n\n"
        "Every `sluice.dev/*` label and annotation Sluice reads or writes. Generated from\n"
        "`operator/sluice_operator/inject/annotations.py`; do not edit by hand. Types: `bool` is\n"
        "the string `true` or `false`; `port` is 1024-65535 (the sidecar runs as non-root);\n"
        "`quantity` is a Kubernetes resource quantity. A bad value is ignored (the default\n"
        "applies) and reported in `sluice.dev/inject-reason` and as an admission warning.\n\n"
        f"{render_section()}\n\n"
        "See [injection.md](injection.md) for what the injector does with them.\n"
    )


def replace_section(text: str) -> str:
    """``text`` with its generated section replaced by the current one.

    Raises ValueError when the markers are missing.
    """
    start = text.find(DOC_BEGIN)
    end = text.find(DOC_END)
    if start < 0 or end < start:
        raise ValueError("the generated-section markers are missing")
    return text[:start] + render_section() + text[end + len(DOC_END) :]


DOC_FILES = ("docs/annotations.md", "docs/injection.md")


def expected_docs(repo: Path) -> dict[Path, str]:
    """Each generated doc file and the text it should have."""
    out = {repo / DOC_FILES[0]: render_markdown()}
    for name in DOC_FILES[1:]:
        path = repo / name
        out[path] = replace_section(path.read_text(encoding="utf-8"))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m sluice_operator.inject.annotations [--write]``: print or update the docs."""
    parser = argparse.ArgumentParser(prog="python -m sluice_operator.inject.annotations")
    parser.add_argument("--write", action="store_true", help="update docs/ in the repo at --repo")
    parser.add_argument("--repo", default=".", help="repository root (default: .)")
    args = parser.parse_args(argv)
    if not args.write:
        sys.stdout.write(render_markdown())
        return 0
    for path, text in expected_docs(Path(args.repo)).items():
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
