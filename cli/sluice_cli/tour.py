"""``sluice demo``: the guided first run over ``examples/02-tour/``.

Owns the tour - one ready-to-paste call per thing Sluice does, each with the promise it keeps: a
prompt by label and its version header, an e-mail address redacted before the provider sees it
(and the audit record that proves it), a fallback through a failing backend, a budget that answers
429 once spent, a rate limit, the metrics to look at - and the banner that prints it. The calls
are single shell lines (``curl`` only), so the README and the e2e test run exactly what is printed
(``tests/e2e/test_demo_tour.py``). No IO here beyond building text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from sluice_operator.compile import CompileResult

JSON = "-H 'content-type: application/json'"


@dataclass(frozen=True)
class Call:
    key: str
    title: str
    command: str  # with {base} (http://host:port/v1) and {admin} (http://host:admin_port)
    promise: str


def _chat(model: str, content: str) -> str:
    message = {"role": "user", "content": content}
    body = json.dumps({"model": model, "messages": [message]})
    return f"'{body}'"


CALLS: tuple[Call, ...] = (
    Call(
        "prompt",
        "A prompt by label: support@production renders version 1 of PromptTemplate support",
        "curl -si {base}/chat/completions " + JSON + " -H 'x-sluice-prompt: support@production' "
        '-H \'x-sluice-prompt-variables: {"question": "How do I rotate a key?"}\' '
        '-d \'{"model": "chat", "messages": []}\' | grep -i \'^x-sluice-prompt-version\'',
        "prints x-sluice-prompt-version: support@1 (move the label to 2 in "
        "prompttemplate.yaml and the same call runs version 2)",
    ),
    Call(
        "redact",
        "Redaction: the e-mail address never reaches the provider",
        "curl -s {base}/chat/completions "
        + JSON
        + " -d "
        + _chat("chat", "Mail the invoice to jane.doe@example.com"),
        'answers 200; this terminal prints the request\'s audit record with "guardrails":'
        '[{"policy":"redact-email","stage":"input","check":"pii","action":"Redact",...,'
        '"entities":{"EMAIL":1}}]',
    ),
    Call(
        "fallback",
        "Fallback: backend broken answers 500, backup serves the request",
        "curl -si {base}/chat/completions "
        + JSON
        + " -d "
        + _chat("flaky", "Hello")
        + " | grep -iE '^x-sluice-(backend|attempts):'",
        "prints x-sluice-backend: backup and x-sluice-attempts: 2",
    ),
    Call(
        "budget",
        "Budget: one request a day on model metered, then 429 until the window resets",
        "for i in 1 2; do curl -s -o /dev/null -w '%{http_code}\\n' {base}/chat/completions "
        + JSON
        + " -d "
        + _chat("metered", "Hi")
        + "; done",
        "prints 200, then 429 (insufficient_quota, with Retry-After)",
    ),
    Call(
        "ratelimit",
        "Rate limit: two requests a minute on model limited",
        "for i in 1 2 3; do curl -s -o /dev/null -w '%{http_code}\\n' {base}/chat/completions "
        + JSON
        + " -d "
        + _chat("limited", "Hi")
        + "; done",
        "prints 200, 200, then 429 (rate_limit_exceeded)",
    ),
    Call(
        "metrics",
        "Metrics: what each of the calls above counted",
        "curl -s {admin}/metrics | grep -E "
        "'^sluice_(requests_total|fallbacks_total|upstream_attempts_total)'",
        "prints requests by route and status code (the 429s of 4 and 5 among them), "
        "fallbacks by route, and attempts by backend (broken's 500s)",
    ),
)


def tour_dir() -> Path:
    """The tour's manifests: from the source tree, or the copy packaged in the wheel."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parents[1] / "examples" / "02-tour", here / "examples" / "02-tour"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("the demo tour's examples are not installed")


def commands(host: str, port: int, admin_port: int) -> dict[str, str]:
    """Each call's shell line for these ports."""
    base, admin = f"http://{host}:{port}/v1", f"http://{host}:{admin_port}"
    return {c.key: c.command.replace("{base}", base).replace("{admin}", admin) for c in CALLS}


def banner(host: str, port: int, admin_port: int, result: CompileResult) -> str:
    """What ``sluice demo`` prints before serving."""
    base = f"http://{host}:{port}/v1"
    lines = [
        "",
        f"Sluice demo on {base}  (metrics: http://{host}:{admin_port}/metrics)",
        f"serving examples/02-tour: routes {', '.join(r.name for r in result.config.routes)}; "
        f"config hash {result.hash}; the mock provider, no API keys",
        "",
        "Paste each call into another terminal:",
    ]
    shell = commands(host, port, admin_port)
    for n, call in enumerate(CALLS, 1):
        lines += ["", f"{n}. {call.title}", f"  {shell[call.key]}", f"  -> {call.promise}"]
    lines += [
        "",
        "Or from Python (pip install openai):",
        "",
        "  from openai import OpenAI",
        f'  client = OpenAI(base_url="{base}", api_key="unused")',
        "  reply = client.chat.completions.create(",
        '      model="chat", messages=[{"role": "user", "content": "Hello!"}])',
        "  print(reply.choices[0].message.content)",
        "",
        "Edit the files in examples/02-tour and the demo reloads them. Press Ctrl-C to stop.",
        "",
    ]
    return "\n".join(lines)
