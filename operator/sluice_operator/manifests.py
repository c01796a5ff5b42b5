"""Reading Sluice manifests: YAML documents → validated ``Resource`` objects, or precise errors.

Owns the mapping from a raw Kubernetes object (a dict, from a file or from the apiserver) to a typed
resource, and the wording of every validation error a user sees, in the form
``file: document N (Kind "name"): spec.path[1].field: what is wrong``.

``parse_object`` is pure; ``load_paths`` does the file IO (reading the files named, nothing else).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from .api import API_VERSION, GROUP, Kind, kind_by_name
from .api.base import RuleError, SluiceModel

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
DEFAULT_NAMESPACE = "default"


@dataclass(frozen=True)
class Resource:
    """One validated Sluice resource."""

    kind: Kind
    name: str
    namespace: str
    spec: SluiceModel
    generation: int = 1
    labels: Mapping[str, str] = field(default_factory=dict)
    origin: str = ""  # where it came from, for messages: "file.yaml: document 2"
    created: str = ""  # metadata.creationTimestamp (RFC 3339, sorts by time); "" from files

    @property
    def ref(self) -> str:
        return f'{self.kind.kind} "{self.name}"'


@dataclass(frozen=True)
class ManifestError:
    """A problem with one document, said so that a person can fix it."""

    origin: str
    what: str  # 'ModelRoute "chat"' or "" when the document is unreadable
    path: str  # "spec.backends[1].weight" or ""
    message: str

    def __str__(self) -> str:
        head = f"{self.origin} ({self.what})" if self.what else self.origin
        return f"{head}: {self.path}: {self.message}" if self.path else f"{head}: {self.message}"


def _path(loc: Iterable[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


def _message(err: Mapping[str, Any]) -> tuple[str, str]:
    """(extra path below loc, message) for one pydantic error."""
    cause = err.get("ctx", {}).get("error")
    if isinstance(cause, RuleError):
        return (cause.field or "", str(cause))
    msg = str(err["msg"])
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if err["type"] == "extra_forbidden":
        msg = "unknown field; check its spelling and indentation (see `kubectl explain`)"
    elif err["type"] == "missing":
        msg = "required field is missing"
    return ("", msg)


def validation_errors(exc: ValidationError, prefix: str) -> list[tuple[str, str]]:
    """(field path, message) pairs, paths rooted at ``prefix`` (e.g. ``spec``)."""
    out = []
    for err in exc.errors():
        extra, msg = _message(err)
        loc = [prefix, *err["loc"]]
        if extra:
            loc.append(extra)
        out.append((_path(loc), msg))
    return out


def parse_object(obj: Any, origin: str) -> Resource | list[ManifestError] | None:
    """Validate one decoded document. None when it is not a Sluice object (ignored)."""
    if obj is None:
        return None
    if not isinstance(obj, Mapping):
        return [ManifestError(origin, "", "", "not a mapping; expected a Kubernetes object")]
    api_version = obj.get("apiVersion")
    kind_name = obj.get("kind")
    if not isinstance(api_version, str) or not api_version.startswith(GROUP + "/"):
        return None
    meta = obj.get("metadata") or {}
    name = meta.get("name") if isinstance(meta, Mapping) else None
    what = f'{kind_name} "{name}"' if name else str(kind_name)
    errors: list[ManifestError] = []
    if api_version != API_VERSION:
        errors.append(
            ManifestError(origin, what, "apiVersion", f"unsupported version; use {API_VERSION}")
        )
    kind = kind_by_name(str(kind_name))
    if kind is None:
        errors.append(
            ManifestError(
                origin,
                what,
                "kind",
                f"unknown kind {kind_name!r}; expected ModelRoute, PromptTemplate, Budget or "
                "GuardrailPolicy",
            )
        )
    if not isinstance(name, str) or not _DNS_SUBDOMAIN.match(name) or len(name) > 253:
        errors.append(
            ManifestError(
                origin, what, "metadata.name", "required: lower-case letters, digits, '-' and '.'"
            )
        )
    namespace = meta.get("namespace", DEFAULT_NAMESPACE) if isinstance(meta, Mapping) else None
    if not isinstance(namespace, str) or not _DNS_SUBDOMAIN.match(namespace):
        errors.append(ManifestError(origin, what, "metadata.namespace", "not a valid namespace"))
    if kind is None or errors:
        return errors
    spec = obj.get("spec")
    if spec is None:
        return [ManifestError(origin, what, "spec", "required field is missing")]
    try:
        model = kind.spec.model_validate(spec)
    except ValidationError as exc:
        return [ManifestError(origin, what, p, m) for p, m in validation_errors(exc, "spec")]
    labels = meta.get("labels") or {}
    return Resource(
        kind=kind,
        name=str(name),
        namespace=str(namespace),
        spec=model,
        generation=int(meta.get("generation") or 1),
        labels={str(k): str(v) for k, v in labels.items()},
        origin=origin,
        created=str(meta.get("creationTimestamp") or ""),
    )


def _yaml_error(exc: yaml.YAMLError, origin: str) -> ManifestError:
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    problem = getattr(exc, "problem", None) or str(exc)
    return ManifestError(origin, "", "", f"{where}invalid YAML: {problem}")


def parse_text(text: str, source: str) -> tuple[list[Resource], list[ManifestError]]:
    """All Sluice resources in one multi-document YAML text, and every error found."""
    resources: list[Resource] = []
    errors: list[ManifestError] = []
    try:
        docs = list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        return [], [_yaml_error(exc, source)]
    for index, doc in enumerate(docs, start=1):
        result = parse_object(doc, f"{source}: document {index}")
        if isinstance(result, Resource):
            resources.append(result)
        elif result:
            errors.extend(result)
    return resources, errors


def expand(paths: Sequence[str | Path]) -> list[Path]:
    """Files named, and ``*.yaml``/``*.yml`` files inside folders named (sorted, not recursive)."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files.extend(
                sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
            )
        else:
            files.append(path)
    return files


def missing(paths: Sequence[str | Path]) -> list[str]:
    """The paths named that do not exist (to say so plainly, before any validation)."""
    return [str(p) for p in paths if not Path(p).exists()]


def load_paths(paths: Sequence[str | Path]) -> tuple[list[Resource], list[ManifestError]]:
    """Read and validate every manifest under ``paths``; duplicates are errors too."""
    resources: list[Resource] = []
    errors: list[ManifestError] = []
    files = expand(paths)
    if not files:
        errors.append(ManifestError(", ".join(map(str, paths)), "", "", "no YAML files found"))
    for file in files:
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            errors.append(ManifestError(str(file), "", "", f"cannot read: {exc}"))
            continue
        found, errs = parse_text(text, str(file))
        resources.extend(found)
        errors.extend(errs)
    seen: dict[tuple[str, str, str], Resource] = {}
    for res in resources:
        key = (res.kind.kind, res.namespace, res.name)
        if key in seen:
            errors.append(
                ManifestError(
                    res.origin, res.ref, "metadata.name", f"duplicate of {seen[key].origin}"
                )
            )
        seen[key] = res
    return resources, errors
