"""Agent runs: nested spending envelopes and the loop breaker.

Owns the run a request belongs to and what each run has spent:

* **The names.** A request names its run with the header ``x-sluice-run`` or ``metadata.run``,
  and the run that started it with ``x-sluice-parent-run`` or ``metadata.parentRun`` (the body
  wins over the headers; Sluice's keys are removed from ``metadata`` before it goes upstream).
  An id is 1 to ``MAX_ID_CHARS`` printable ASCII characters. A run's parent is fixed by its first
  request; a later request that names another parent keeps the first (so no cycle can form), and
  nesting deeper than ``MAX_DEPTH`` is refused with a 400.
* **Envelopes.** A run's totals include all its descendants: a step of a sub-run is charged to
  the sub-run and to every ancestor. A Budget's ``perRun{usd, tokens, requests}`` holds for every
  run on the chain, so a sub-run draws from its parent's ceiling and can never outspend it.
  ``maxSteps`` bounds the run's *own* requests (every admitted request counts, failed ones too:
  it is the loop breaker of one agent). Totals count everything the run sent through this
  sidecar, on any route.
* **Reserve, then settle.** ``RunBook.admit`` checks every envelope of the chain against
  ``spent + reserved + worst case`` and reserves the worst case in all of them in one synchronous
  step, so concurrent steps of one run cannot race past a limit; ``settle`` replaces the
  reservation with what the request used, ``release`` frees it when it used nothing (money is
  integer picodollars, so holds and releases cancel exactly).
* **Bounded memory.** At most ``MAX_RUNS`` runs are remembered (a few hundred bytes each); a run
  is forgotten ``IDLE_SECONDS`` after its last request (or its descendants' last), and when the
  table is full the least recently used run goes first (ancestors are touched with every step of
  a descendant, so a parent never goes before its children). A forgotten run that comes back
  starts from zero.

Pure: the monotonic instant ``now`` is passed in; no IO.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..contract import RunLimits
from ..errors import InvalidField
from .ledger import PICO_PER_USD, to_pico

HEADER = "x-sluice-run"
PARENT_HEADER = "x-sluice-parent-run"
META_RUN = "run"
META_PARENT = "parentRun"
OURS = frozenset((META_RUN, META_PARENT))
MAX_ID_CHARS = 128
MAX_DEPTH = 16
MAX_RUNS = 10_000
IDLE_SECONDS = 3600.0


@dataclass(frozen=True, slots=True)
class RunRef:
    """The run a request names, and the parent it names (if any)."""

    run: str
    parent: str | None = None


def _id(value: Any, where: str) -> str:
    if (
        not isinstance(value, str)
        or not 0 < len(value) <= MAX_ID_CHARS
        or not value.isascii()
        or not value.isprintable()
    ):
        raise InvalidField(
            where, f"expected a run id of 1 to {MAX_ID_CHARS} printable ASCII characters"
        )
    return value


def reference(
    body: Mapping[str, Any], headers: Mapping[str, str]
) -> tuple[RunRef | None, dict[str, Any] | None]:
    """The run ``body`` and ``headers`` name, and the body to send upstream (a new dict without
    Sluice's ``metadata`` keys, or None when ``body`` has none of them). A pure function; raises
    ``InvalidField`` for a malformed id."""
    run: Any = headers.get(HEADER)
    parent: Any = headers.get(PARENT_HEADER)
    run_where, parent_where = HEADER, PARENT_HEADER
    new_body: dict[str, Any] | None = None
    meta = body.get("metadata")
    if isinstance(meta, Mapping) and (META_RUN in meta or META_PARENT in meta):
        if META_RUN in meta:
            run, run_where = meta[META_RUN], "metadata.run"
        if META_PARENT in meta:
            parent, parent_where = meta[META_PARENT], "metadata.parentRun"
        rest = {k: v for k, v in meta.items() if k not in OURS}
        new_body = dict(body)
        if rest:
            new_body["metadata"] = rest
        else:
            del new_body["metadata"]
    if run is None:
        if parent is not None:
            raise InvalidField(parent_where, f"a parent run needs a run ({HEADER} or metadata.run)")
        return None, new_body
    run_id = _id(run, run_where)
    parent_id = _id(parent, parent_where) if parent is not None else None
    return RunRef(run_id, parent_id if parent_id != run_id else None), new_body


class Run:
    """One run's totals (its own and its descendants'), reservations and own steps."""

    __slots__ = (
        "depth",
        "id",
        "last_seen",
        "parent",
        "requests",
        "reserved_pusd",
        "reserved_requests",
        "reserved_tokens",
        "spent_pusd",
        "steps",
        "tokens",
    )

    def __init__(self, run_id: str, parent: Run | None, now: float) -> None:
        self.id = run_id
        self.parent = parent
        self.depth: int = 0 if parent is None else parent.depth + 1
        self.last_seen = now
        self.steps = 0
        self.spent_pusd = 0
        self.tokens = 0
        self.requests = 0
        self.reserved_pusd = 0
        self.reserved_tokens = 0
        self.reserved_requests = 0

    def chain(self) -> list[Run]:
        """This run and its ancestors, innermost first."""
        out: list[Run] = []
        r: Run | None = self
        while r is not None:
            out.append(r)
            r = r.parent
        return out

    @property
    def root(self) -> Run:
        return self.chain()[-1]

    @property
    def spent_usd(self) -> float:
        return self.spent_pusd / PICO_PER_USD


@dataclass(frozen=True, slots=True)
class RunExceeded:
    """Which run, which budget and which limit refused a step (``BudgetExceeded.exceeded``)."""

    run: str
    rule: str
    metric: str  # usd | tokens | requests | maxSteps
    limit: float
    used: float
    requested: float
    #: The envelope that said no, when it is an ancestor of ``run``.
    envelope: str | None = None
    #: No Retry-After: the run's envelope does not refill.
    retry_after: float | None = None

    def message(self) -> str:
        if self.metric == "maxSteps":
            return (
                f"Run '{self.run}' reached the {int(self.limit)} steps that budget '{self.rule}' "
                f"allows one run (perRun.maxSteps); step {int(self.used) + 1} is refused. The "
                "agent may be looping; start a new run to go on."
            )
        unit = _unit(self.metric)
        owner = (
            f"run '{self.run}'"
            if self.envelope is None
            else f"run '{self.run}' (within its ancestor run '{self.envelope}')"
        )
        return (
            f"Budget '{self.rule}' allows {_fmt(self.metric, self.limit)}{unit} per run "
            f"(perRun.{self.metric}); {owner} has spent or reserved "
            f"{_fmt(self.metric, self.used)}{unit} and this step may need up to "
            f"{_fmt(self.metric, self.requested)}{unit}."
        )


def _unit(metric: str) -> str:
    return "" if metric == "usd" else f" {metric}"


def _fmt(metric: str, value: float) -> str:
    if metric == "usd":
        return f"${value:,.2f}" if value >= 0.01 or value == 0 else f"${value:.6f}"
    return f"{round(value):,}"


@dataclass(slots=True)
class RunHold:
    """A step's reservation in every envelope of its run's chain."""

    run: Run
    pusd: int
    tokens: int
    step: int
    #: (budget, metric) limits broken by a step admitted anyway (AlertOnly).
    over: tuple[RunExceeded, ...] = ()
    done: bool = False


def _check(run: Run, rule: str, lim: RunLimits, pusd: int, tokens: int) -> RunExceeded | None:
    if lim.max_steps is not None and run.steps + 1 > lim.max_steps:
        return RunExceeded(run.id, rule, "maxSteps", lim.max_steps, run.steps, 1)
    for r in run.chain():
        envelope = None if r is run else r.id
        if lim.usd is not None:
            used = r.spent_pusd + r.reserved_pusd
            if used + pusd > to_pico(lim.usd):
                return RunExceeded(
                    run.id,
                    rule,
                    "usd",
                    lim.usd,
                    used / PICO_PER_USD,
                    pusd / PICO_PER_USD,
                    envelope,
                )
        if lim.tokens is not None and r.tokens + r.reserved_tokens + tokens > lim.tokens:
            used_t = r.tokens + r.reserved_tokens
            return RunExceeded(run.id, rule, "tokens", lim.tokens, used_t, tokens, envelope)
        if lim.requests is not None and r.requests + r.reserved_requests + 1 > lim.requests:
            used_r = r.requests + r.reserved_requests
            return RunExceeded(run.id, rule, "requests", lim.requests, used_r, 1, envelope)
    return None


class RunBook:
    """Every run one sidecar has seen recently. Pure: instants are passed in."""

    def __init__(self, *, max_runs: int = MAX_RUNS, idle_seconds: float = IDLE_SECONDS) -> None:
        self.max_runs = max_runs
        self.idle_seconds = idle_seconds
        #: Least recently used first (a touched run moves to the end).
        self._runs: dict[str, Run] = {}

    def __len__(self) -> int:
        return len(self._runs)

    def get(self, run_id: str) -> Run | None:
        return self._runs.get(run_id)

    def _expire(self, now: float) -> None:
        runs = self._runs
        while runs:
            oldest = next(iter(runs.values()))
            if now - oldest.last_seen < self.idle_seconds and len(runs) < self.max_runs:
                return
            del runs[oldest.id]

    def _touch(self, run: Run, now: float) -> None:
        for r in run.chain():  # innermost first: the ancestors end up more recent
            r.last_seen = now
            if self._runs.get(r.id) is r:
                del self._runs[r.id]
            self._runs[r.id] = r

    def _run(self, ref: RunRef, now: float) -> Run:
        run = self._runs.get(ref.run)
        if run is not None:
            return run
        parent: Run | None = None
        if ref.parent is not None:
            parent = self._runs.get(ref.parent)
            if parent is None:
                parent = Run(ref.parent, None, now)
            if parent.depth + 1 > MAX_DEPTH:
                raise InvalidField(
                    PARENT_HEADER, f"runs nest at most {MAX_DEPTH} deep; this run would be deeper"
                )
        return Run(ref.run, parent, now)

    def admit(
        self,
        ref: RunRef,
        limits: Sequence[tuple[str, RunLimits, bool]],
        usd: float,
        tokens: int,
        now: float,
    ) -> RunHold:
        """Reserve one step of ``ref``'s run (worst case ``usd`` and ``tokens``) in every
        envelope of its chain, or raise ``RunExceeded`` wrapped by the caller. ``limits``:
        (budget name, perRun, enforce) for each budget that covers the request; a limit that is
        not enforced (AlertOnly) is recorded in ``RunHold.over`` instead."""
        self._expire(now)
        run = self._run(ref, now)
        pusd = to_pico(usd)
        over: list[RunExceeded] = []
        for rule, lim, enforce in limits:
            x = _check(run, rule, lim, pusd, tokens)
            if x is None:
                continue
            if enforce:
                raise RunRefused(x)
            over.append(x)
        self._touch(run, now)
        run.steps += 1
        for r in run.chain():
            r.reserved_pusd += pusd
            r.reserved_tokens += tokens
            r.reserved_requests += 1
        return RunHold(run, pusd, tokens, run.steps, tuple(over))

    def settle(self, hold: RunHold, usd: float, tokens: int) -> None:
        """Charge what the step used in place of its reservation (once per hold)."""
        if hold.done:
            return
        hold.done = True
        pusd = to_pico(usd)
        for r in hold.run.chain():
            r.reserved_pusd -= hold.pusd
            r.reserved_tokens -= hold.tokens
            r.reserved_requests -= 1
            r.spent_pusd += pusd
            r.tokens += tokens
            r.requests += 1

    def release(self, hold: RunHold) -> None:
        """Free the reservation of a step that used nothing (its step still counts)."""
        if hold.done:
            return
        hold.done = True
        for r in hold.run.chain():
            r.reserved_pusd -= hold.pusd
            r.reserved_tokens -= hold.tokens
            r.reserved_requests -= 1


class RunRefused(Exception):  # noqa: N818 - carries the refusal, the caller raises the 429
    """``RunBook.admit`` refused a step; ``exceeded`` says why."""

    def __init__(self, exceeded: RunExceeded) -> None:
        super().__init__(exceeded.message())
        self.exceeded = exceeded


def totals(hold: RunHold) -> dict[str, Any]:
    """JSON-safe run totals for the audit record, after the step settled."""
    run = hold.run
    root = run.root
    out: dict[str, Any] = {
        "id": run.id,
        "step": hold.step,
        "spentUSD": round(run.spent_usd, 8),
        "tokens": run.tokens,
        "requests": run.requests,
    }
    if run.parent is not None:
        out["parent"] = run.parent.id
        out["root"] = root.id
        out["rootSpentUSD"] = round(root.spent_usd, 8)
    if hold.over:
        out["overLimit"] = sorted({f"{x.rule}:{x.metric}" for x in hold.over})
    return out
