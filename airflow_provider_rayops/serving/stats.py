"""Per-version request outcomes over a recent window: what the deploy operator judges a canary by.

The router records each model call (its latency, and whether the version failed it) and answers
`GET <prefix>/-/stats?window_s=60` with, per version, the requests, errors, error rate and
p50/p99 latency of the last `window_s` seconds. Ray's metrics (the Counter and Histogram the
router also writes) need a Prometheus to be read back; this needs nothing but the endpoint.

Bounded: each version keeps its last `MAX_SAMPLES` calls, so a window that held more is judged
by its most recent calls (the answer says how many it saw). No Ray here.
"""

from __future__ import annotations

import collections
import math
import time
from collections.abc import Iterable
from typing import Any

MAX_SAMPLES = 50_000


def percentile(sorted_values: list[float], share: float) -> float | None:
    """Nearest-rank percentile of already sorted values (None when there are none)."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(share * len(sorted_values)))
    return sorted_values[rank - 1]


class VersionStats:
    """What each version did with the calls it got, oldest dropped past MAX_SAMPLES per version."""

    def __init__(self, max_samples: int = MAX_SAMPLES) -> None:
        self.max_samples = max_samples
        self._calls: dict[str, collections.deque[tuple[float, float | None, bool]]] = {}

    def record(self, version: str, *, latency_ms: float | None, failed: bool, at: float | None = None) -> None:
        """One call; `latency_ms` None for a request the version never ran (not ready, refused)."""
        calls = self._calls.get(version)
        if calls is None:
            calls = self._calls[version] = collections.deque(maxlen=self.max_samples)
        calls.append((time.monotonic() if at is None else at, None if latency_ms is None else float(latency_ms), bool(failed)))

    def forget(self, keep: Iterable[str]) -> None:
        """Drop the versions not in `keep` (no longer served)."""
        kept = set(keep)
        for version in [v for v in self._calls if v not in kept]:
            del self._calls[version]

    def summary(self, window_s: float, *, now: float | None = None) -> dict[str, dict[str, Any]]:
        """Per version: requests, errors, error_rate and p50_ms / p99_ms over the last `window_s`."""
        now = time.monotonic() if now is None else now
        since = now - window_s
        out: dict[str, dict[str, Any]] = {}
        for version, calls in self._calls.items():
            recent = [(latency, failed) for at, latency, failed in calls if at >= since]
            latencies = sorted(latency for latency, _ in recent if latency is not None)
            errors = sum(1 for _, failed in recent if failed)
            out[version] = {
                "requests": len(recent),
                "errors": errors,
                "error_rate": errors / len(recent) if recent else None,
                "p50_ms": percentile(latencies, 0.50),
                "p99_ms": percentile(latencies, 0.99),
            }
        return out
