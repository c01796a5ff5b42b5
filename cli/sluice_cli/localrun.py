"""``sluice run`` / ``sluice demo``: serve the sidecar from manifests on a laptop, no cluster.

Owns the loop that compiles a folder of manifests into a config file and keeps it current: the
manifests are polled for changes, recompiled, and the file is replaced atomically (write + rename,
like the kubelet's ConfigMap swap), so the sidecar's own file watcher picks the change up. The
sidecar itself is the same code that runs in a pod (``sluice_sidecar.main.serve``).

Never fail open, as in a cluster (``reload``): an edit that makes one object invalid (a typo in a
GuardrailPolicy's regex) prints its errors and keeps that object's last valid version in force
while every other change applies; only deleting the object removes its rules. An edit whose
errors cannot be pinned on one object (a file that is not YAML, a duplicate name) keeps the
whole last good config.

Before serving, both ports are tried: a port already taken (another ``sluice run`` on the defaults)
ends the command with one line naming the port and the flag that changes it, not a traceback.
"""

from __future__ import annotations

import errno
import os
import socket
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from sluice_operator import configmap, manifests
from sluice_operator.api import kind_by_name
from sluice_operator.compile import CompileResult, Held, compile_namespace

T = TypeVar("T")
POLL_SECONDS = 1.0
#: How long the manifests must stay unchanged before a changed folder is reloaded.
SETTLE_SECONDS = 0.25
ADMIN_HOST = "127.0.0.1"  # the sidecar's default admin bind address


def port_taken(host: str, port: int) -> bool:
    """True when something already listens on ``host:port`` (a bind fails with EADDRINUSE)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror:
        return False  # the server reports a bad host itself
    with socket.socket(family, kind, proto) as probe:
        # as the server will bind: SO_REUSEADDR ignores TIME_WAIT leftovers, not live listeners
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


def busy_port_message(host: str, port: int, admin_port: int) -> str | None:
    """One line for the user when a port to serve on is taken, else None."""
    for bind, number, what, flag in (
        (host, port, "API", "--port"),
        (ADMIN_HOST, admin_port, "admin (metrics, health)", "--admin-port"),
    ):
        if port_taken(bind, number):
            return (
                f"error: {what} port {number} on {bind} is already in use (another `sluice run`?); "
                f"choose another with {flag} N"
            )
    return None


def _fingerprint(paths: Sequence[Path]) -> tuple[tuple[str, int, int], ...]:
    out = []
    for file in manifests.expand(paths):
        try:
            st = file.stat()
        except OSError:
            continue
        out.append((str(file), st.st_mtime_ns, st.st_size))
    return tuple(out)


def compile_for(paths: Sequence[Path], namespace: str | None) -> CompileResult | str:
    """The compiled config of ``namespace`` (or the only one), or an error text for the user."""
    absent = manifests.missing(paths)
    if absent:
        return "\n".join(f"error: {p}: no such file or directory" for p in absent)
    resources, errors = manifests.load_paths(paths)
    if errors:
        return "\n".join(f"error: {e}" for e in errors)
    namespaces = sorted({r.namespace for r in resources})
    if not namespaces:
        return "error: no Sluice resources (apiVersion sluice.dev/v1alpha1) found"
    if namespace is None:
        if len(namespaces) > 1:
            return (
                f"error: manifests span namespaces {', '.join(namespaces)}; "
                "choose one with --namespace"
            )
        namespace = namespaces[0]
    elif namespace not in namespaces:
        return f"error: no resources in namespace {namespace!r} (found: {', '.join(namespaces)})"
    return compile_namespace(namespace, resources)


def _held(errors: Sequence[manifests.ManifestError]) -> list[Held] | None:
    """The objects the errors are about, or None when one of them is not about one object's
    spec (unreadable YAML, bad metadata, a duplicate)."""
    held: dict[tuple[str, str], Held] = {}
    for err in errors:
        kind_name, _, rest = err.what.partition(' "')
        kind = kind_by_name(kind_name)
        if kind is None or not rest.endswith('"') or not err.path.startswith("spec"):
            return None
        name = rest[:-1]
        held[(kind.kind, name)] = Held(kind.kind, name)
    return list(held.values())


def reload(
    paths: Sequence[Path], namespace: str | None, previous: CompileResult
) -> tuple[CompileResult | None, list[str]]:
    """The config after an edit, and what to tell the user. None keeps the whole previous
    config; objects whose new version is invalid keep their previous version."""
    result = compile_for(paths, namespace)
    if not isinstance(result, str):
        return result, [f"config reloaded: hash {result.hash}"]
    resources, errors = manifests.load_paths(paths)
    held = _held(errors) if errors and not manifests.missing(paths) else None
    ns = namespace or previous.config.namespace
    if held is None or any(r.namespace != ns for r in resources):
        return None, [result, "keeping the last good config"]
    new = compile_namespace(ns, resources, held=held, previous=previous.config)
    lines = [f"error: {e}" for e in errors]
    for h in held:
        what = f'{h.kind} "{h.name}"'
        if new.keeps(h.kind, h.name):
            lines.append(f"{what}: invalid edit; still enforcing its last valid version")
        else:
            lines.append(f"{what}: invalid and never valid; not in force")
    lines.append(f"config reloaded: hash {new.hash}")
    return new, lines


def write_atomically(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".config-")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


def _report(result: CompileResult) -> None:
    for problem in result.problems:
        print(f"warning: {problem}", file=sys.stderr)


def wait_until_settled(
    changed: T, fingerprint: Callable[[], T], wait: Callable[[float], bool]
) -> T | None:
    """The manifests' fingerprint once it stopped changing for ``SETTLE_SECONDS`` after
    ``changed`` was seen (None: ``wait`` said stop). An editor's save (truncate, then write) must
    not be read half-way: an emptied file would remove its objects for a moment."""
    while not wait(SETTLE_SECONDS):
        now = fingerprint()
        if now == changed:
            return now
        changed = now
    return None


def _watch(
    paths: Sequence[Path],
    namespace: str | None,
    target: Path,
    stop: threading.Event,
    current: CompileResult,
) -> None:
    seen = _fingerprint(paths)
    while not stop.wait(POLL_SECONDS):
        now = _fingerprint(paths)
        if now == seen:
            continue
        settled = wait_until_settled(now, lambda: _fingerprint(paths), stop.wait)
        if settled is None:
            return
        seen = settled
        result, lines = reload(paths, namespace, current)
        if result is not None:
            _report(result)
            write_atomically(target, result.config.canonical_json())
            current = result
        print("\n".join(lines), file=sys.stderr)


def demo_banner(host: str, port: int, admin_port: int, result: CompileResult) -> str:
    route = result.config.routes[0].name if result.config.routes else "chat"
    base = f"http://{host}:{port}/v1"
    return f"""
Sluice demo sidecar on {base}  (metrics: http://{host}:{admin_port}/metrics)
routes: {", ".join(r.name for r in result.config.routes)}   config hash: {result.hash}

Try it with curl:

  curl -s {base}/chat/completions -H 'content-type: application/json' \\
    -d '{{"model": "{route}", "messages": [{{"role": "user", "content": "Hello!"}}]}}'

or with the openai SDK (pip install openai):

  from openai import OpenAI
  client = OpenAI(base_url="{base}", api_key="unused")
  reply = client.chat.completions.create(
      model="{route}", messages=[{{"role": "user", "content": "Hello!"}}])
  print(reply.choices[0].message.content)

Press Ctrl-C to stop.
"""


def run(
    paths: Sequence[Path],
    *,
    host: str,
    port: int,
    admin_port: int,
    secrets_dir: Path,
    namespace: str | None,
    banner: bool,
) -> int:
    """Compile, serve, and keep the served config in step with the manifests. Blocks."""
    from sluice_sidecar import main as sidecar_main

    result = compile_for(paths, namespace)
    if isinstance(result, str):
        print(f"{result}\nnothing was served; fix the errors above.", file=sys.stderr)
        return 1
    busy = busy_port_message(host, port, admin_port)
    if busy is not None:
        print(busy, file=sys.stderr)
        return 1
    _report(result)
    with tempfile.TemporaryDirectory(prefix="sluice-run-") as tmp:
        target = Path(tmp) / configmap.KEY
        write_atomically(target, result.config.canonical_json())
        stop = threading.Event()
        watcher = threading.Thread(
            target=_watch, args=(paths, namespace, target, stop, result), daemon=True
        )
        watcher.start()
        if banner:
            print(demo_banner(host, port, admin_port, result), file=sys.stderr)
        try:
            sidecar_main.serve(
                target, host=host, port=port, admin_port=admin_port, secrets_dir=secrets_dir
            )
        except KeyboardInterrupt:
            pass
        except OSError as exc:  # a port taken between the check and the bind, or not allowed
            print(
                f"error: cannot serve on {host}:{port} / {ADMIN_HOST}:{admin_port}: "
                f"{exc.strerror or exc}; choose other ports with --port and --admin-port",
                file=sys.stderr,
            )
            return 1
        finally:
            stop.set()
    return 0
