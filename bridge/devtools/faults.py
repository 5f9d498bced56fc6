"""What goes wrong in the simulator, and how slowly: :class:`Faults` set on the state or at
run time (``PUT /_simulator/faults``), overridden per request by ``X-Simulator-*`` headers."""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

MALFORMED_KINDS: Final = frozenset(
    {"not-json", "not-object", "missing-field", "wrong-type", "oversized"}
)
# Fault statuses a test may ask for: anything that is not a success.
_FAULT_STATUS_RANGE: Final = range(300, 600)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _non_negative(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value >= 0
    )


@dataclass
class Faults:
    """What goes wrong, and how slowly. Tests may mutate the state's instance at runtime."""

    latency: float = 0.0  # seconds added before answering
    latency_max: float | None = None  # if set: uniform random latency in [latency, latency_max]
    failure_rate: float = 0.0  # fraction (0..1) of requests answered with failure_status
    failure_status: int = 503
    status: int | None = None  # when set, every dialoghook request gets this status
    retry_after: float | None = None  # Retry-After header value on fault answers
    hang: bool = False  # accept the request and never answer
    malformed: str | None = None  # answer 200 with a broken body; see MALFORMED_KINDS

    def __post_init__(self) -> None:
        problem = self.problem()
        if problem:
            raise ValueError(problem)

    def problem(self) -> str | None:
        """Why these faults are invalid, or None."""
        for name, value, optional in (
            ("latency", self.latency, False),
            ("latency_max", self.latency_max, True),
            ("retry_after", self.retry_after, True),
        ):
            if not (value is None and optional) and not _non_negative(value):
                return f"{name} must be a finite number >= 0"
        if self.latency_max is not None and self.latency_max < self.latency:
            return "latency_max must be >= latency"
        if not _is_number(self.failure_rate) or not 0 <= self.failure_rate <= 1:
            return "failure_rate must be a number between 0 and 1"
        for name, status in (("failure_status", self.failure_status), ("status", self.status)):
            if status is None and name == "status":
                continue
            if not isinstance(status, int) or isinstance(status, bool):
                return f"{name} must be an integer HTTP status"
            if status not in _FAULT_STATUS_RANGE:
                return f"{name} must be between 300 and 599"
        if not isinstance(self.hang, bool):
            return "hang must be a boolean"
        if self.malformed is not None and (
            not isinstance(self.malformed, str) or self.malformed not in MALFORMED_KINDS
        ):
            return f"malformed must be one of {', '.join(sorted(MALFORMED_KINDS))} or null"
        return None

    @classmethod
    def from_json(cls, data: object) -> Faults:
        """Faults from a JSON object with the field names; ValueError on anything else."""
        if not isinstance(data, dict):
            raise ValueError("faults must be a JSON object")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown fault fields: {', '.join(unknown)}")
        return cls(**data)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def pick_latency(self, rng: random.Random) -> float:
        if self.latency_max is not None:
            return rng.uniform(self.latency, self.latency_max)
        return self.latency


def _header_number(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {raw[:40]!r}") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0")
    return value


_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off"})


def faults_from_headers(base: Faults, headers: Mapping[str, str]) -> Faults:
    """``base`` overridden by the request's ``X-Simulator-*`` headers; ValueError if bad."""
    changes: dict[str, Any] = {}
    if (raw := headers.get("X-Simulator-Latency")) is not None:
        low, sep, high = raw.strip().partition("-")
        changes["latency"] = _header_number("X-Simulator-Latency", low)
        changes["latency_max"] = _header_number("X-Simulator-Latency", high) if sep else None
    if (raw := headers.get("X-Simulator-Status")) is not None:
        try:
            changes["status"] = int(raw)
        except ValueError:
            raise ValueError(f"X-Simulator-Status must be an integer, got {raw[:40]!r}") from None
    if (raw := headers.get("X-Simulator-Failure-Rate")) is not None:
        changes["failure_rate"] = _header_number("X-Simulator-Failure-Rate", raw)
    if (raw := headers.get("X-Simulator-Retry-After")) is not None:
        changes["retry_after"] = _header_number("X-Simulator-Retry-After", raw)
    if (raw := headers.get("X-Simulator-Hang")) is not None:
        flag = raw.strip().lower()
        if flag not in _TRUE | _FALSE:
            raise ValueError("X-Simulator-Hang must be 1 or 0")
        changes["hang"] = flag in _TRUE
    if (raw := headers.get("X-Simulator-Malformed")) is not None:
        kind = raw.strip()
        changes["malformed"] = None if kind.lower() in ("", "none") else kind
    if not changes:
        return base
    try:
        return dataclasses.replace(base, **changes)
    except ValueError as exc:
        raise ValueError(f"X-Simulator headers: {exc}") from None
