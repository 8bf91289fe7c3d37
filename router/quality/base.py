"""What quality feedback is, how it decays, and the store contract both backends implement.

Evidence about one (route, deployment, task) is a Beta posterior's counts:
a score `s` in [0, 1] adds `s` to `alpha` and `1 - s` to `beta`, so a
thumbs-up is (1, 0), a thumbs-down (0, 1) and a grader's 0.8 is (0.8, 0.2).
Older evidence fades by exponential decay (`Decay`): by elapsed time, by
samples that arrived since, or both, so a deployment that got worse is
noticed without forgetting everything at once.

>>> ev = Evidence().added(1.0, Decay(half_life_s=None))
>>> ev.added(0.0, Decay(half_life_s=None)).alpha
1.0
"""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from router.errors import InvalidRequest, RouterError
from router.records import record

#: Longest task label accepted: tasks are low-cardinality names ("code", "summarise"), not text.
MAX_TASK_CHARS = 64
_TASK = re.compile(r"[A-Za-z0-9_.:/-]+")
#: Longest response id accepted by `register`/`feedback`.
MAX_RESPONSE_ID_CHARS = 200

#: (route, deployment, task); "" as the route means every route, "" as the task every task.
QualityKey = tuple[str, str, str]


class FeedbackNotFound(RouterError):
    """Feedback named a response id the router does not know (never seen, expired, or already scored).

    The message never says which, to a caller, beyond `reason`; it never says
    which tenant a response belongs to.
    """

    def __init__(self, *, response_id: str, reason: str) -> None:
        self.response_id = response_id
        self.reason = reason
        super().__init__(f"no response {response_id!r} awaits feedback ({reason})")


class QualityStoreUnavailable(RouterError):
    """The quality store (Redis) failed; `store` names it, the cause is chained."""

    def __init__(self, *, store: str, operation: str) -> None:
        self.store = store
        self.operation = operation
        super().__init__(f"quality store {store} unavailable during {operation}")


@dataclass(frozen=True, slots=True)
class QualityEstimate:
    """What the feedback says about one deployment on one route (and task).

    `alpha` and `beta` are the decayed Beta counts of the evidence alone (no
    prior); `mean` is `alpha / (alpha + beta)`, None with no evidence;
    `samples` counts every score ever recorded (not decayed).
    """

    mean: float | None
    samples: int
    alpha: float
    beta: float

    @property
    def weight(self) -> float:
        """Effective number of samples left after decay (`alpha + beta`)."""
        return self.alpha + self.beta


@runtime_checkable
class QualityView(Protocol):
    """What strategies may ask about measured quality (the router's health view also implements it)."""

    def quality(self, deployment: str, route: str, task: str | None) -> QualityEstimate | None:
        """The estimate for `deployment` on `route` (and `task`), or None when nothing was measured."""
        ...


@record
class FeedbackTarget:
    """What a response id stands for: where feedback on it is counted, and whose it was."""

    deployment: str
    route: str
    task: str | None
    tenant: str


@dataclass(frozen=True, slots=True)
class Decay:
    """Exponential forgetting of old evidence.

    `half_life_s`: evidence loses half its weight every that many seconds of
    the tracker's clock (None: time does not decay it). `half_life_samples`:
    it loses half its weight every that many newer samples on the same key
    (None: sample count does not decay it). With both, both apply.

    >>> Decay(half_life_s=10.0).factor(elapsed_s=10.0, new_samples=0)
    0.5
    """

    half_life_s: float | None = 7 * 24 * 3600.0
    half_life_samples: float | None = None

    def __post_init__(self) -> None:
        for name in ("half_life_s", "half_life_samples"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive finite number or None, got {value!r}")

    def factor(self, *, elapsed_s: float, new_samples: int) -> float:
        """What remains of evidence after `elapsed_s` seconds and `new_samples` newer samples."""
        f = 1.0
        if self.half_life_s is not None and elapsed_s > 0:
            f *= 0.5 ** (elapsed_s / self.half_life_s)
        if self.half_life_samples is not None and new_samples > 0:
            f *= 0.5 ** (new_samples / self.half_life_samples)
        return f


@dataclass(frozen=True, slots=True)
class Evidence:
    """Decayed Beta counts of one key as of `age_s` seconds ago (its last update)."""

    alpha: float = 0.0
    beta: float = 0.0
    samples: int = 0
    age_s: float = 0.0

    def added(self, score: float, decay: Decay) -> Evidence:
        """These counts decayed to now and by one sample, plus `score` (age 0)."""
        f = decay.factor(elapsed_s=self.age_s, new_samples=1)
        return Evidence(self.alpha * f + score, self.beta * f + (1.0 - score), self.samples + 1, 0.0)

    def estimate(self, decay: Decay, elapsed_s: float) -> QualityEstimate:
        """The estimate `elapsed_s` seconds after this evidence's last update."""
        f = decay.factor(elapsed_s=max(0.0, self.age_s + elapsed_s), new_samples=0)
        alpha, beta = self.alpha * f, self.beta * f
        total = alpha + beta
        return QualityEstimate(alpha / total if total > 0 else None, self.samples, alpha, beta)


def validate_score(score: object) -> float:
    """`score` as a float in [0, 1]; InvalidRequest naming `score` otherwise (NaN, inf, bool, text).

    >>> validate_score(1)
    1.0
    """
    if isinstance(score, bool) or not isinstance(score, int | float):
        raise InvalidRequest(f"must be a number in [0, 1], got {type(score).__name__}", field="score")
    value = float(score)
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise InvalidRequest(f"must be a finite number in [0, 1], got {score!r}", field="score")
    return value


def validate_task(task: object) -> str | None:
    """`task` as a short label or None; InvalidRequest naming `task` otherwise."""
    if task is None:
        return None
    if not isinstance(task, str) or len(task) > MAX_TASK_CHARS or not _TASK.fullmatch(task):
        raise InvalidRequest(
            f"must be a label of 1 to {MAX_TASK_CHARS} letters, digits or _.:/-, got {task!r:.80}", field="task")
    return task


def validate_response_id(response_id: object) -> str:
    """`response_id` as a non-empty string; InvalidRequest naming `response_id` otherwise."""
    if not isinstance(response_id, str) or not 0 < len(response_id) <= MAX_RESPONSE_ID_CHARS:
        raise InvalidRequest(f"must be a string of 1 to {MAX_RESPONSE_ID_CHARS} characters, got {response_id!r:.80}",
                             field="response_id")
    return response_id


class QualityStore(ABC):
    """Where evidence and the feedback-id registry live: `memory://` or Redis.

    Every method may raise the backend's own errors (the tracker decides what
    a failure means). Stores know nothing of priors or strategies.
    """

    name: str

    @abstractmethod
    async def add(self, keys: Sequence[QualityKey], score: float, decay: Decay) -> list[Evidence | None]:
        """Count `score` on each of `keys` (one round trip); each key's updated evidence, None where refused.

        A key that does not exist yet is refused once the store holds its
        `max_keys`: what was learned is never evicted by new labels.
        """

    @abstractmethod
    async def fetch_all(self) -> dict[QualityKey, Evidence]:
        """Every key's evidence (ages as of now), to refresh a replica's view."""

    @abstractmethod
    async def put_target(self, response_id: str, target: FeedbackTarget, ttl_s: float) -> None:
        """Remember what `response_id` stands for, for `ttl_s` seconds."""

    @abstractmethod
    async def take_target(self, response_id: str, tenant: str | None = None) -> FeedbackTarget:
        """What `response_id` stands for, marking it scored; FeedbackNotFound if unknown, expired or scored.

        With `tenant`, a response of another tenant is reported as unknown and left
        unscored, in one step: a tenant can neither probe nor use up another's ids.
        """

    async def aclose(self) -> None:  # noqa: B027 - optional hook: most stores own nothing
        """Release what the store created (nothing, by default)."""
