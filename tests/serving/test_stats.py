"""What the router tells the deploy operator about each version, and how a canary step is judged (no Ray)."""

from __future__ import annotations

import pytest

from airflow_provider_rayops.serving.rollout import judge
from airflow_provider_rayops.serving.stats import VersionStats, percentile

LIMITS = {"max_error_rate": 0.05, "max_p99_ms": 100.0, "min_requests": 10}


def test_a_window_counts_only_its_own_calls_with_the_error_rate_and_percentiles():
    stats = VersionStats()
    for i in range(100):  # an old minute of slow failures, then 100 calls of 1..100 ms with 2 errors
        stats.record("3", latency_ms=5000.0, failed=True, at=float(i))
    for i in range(100):
        stats.record("3", latency_ms=float(i + 1), failed=i in (10, 20), at=1000.0 + i * 0.1)
    summary = stats.summary(30.0, now=1010.0)["3"]
    assert summary == {"requests": 100, "errors": 2, "error_rate": 0.02, "p50_ms": 50.0, "p99_ms": 99.0}


def test_a_request_a_version_never_ran_counts_as_an_error_without_a_latency():
    stats = VersionStats()
    stats.record("4", latency_ms=None, failed=True, at=1.0)
    stats.record("4", latency_ms=8.0, failed=False, at=1.0)
    assert stats.summary(10.0, now=2.0)["4"] == {"requests": 2, "errors": 1, "error_rate": 0.5, "p50_ms": 8.0, "p99_ms": 8.0}


def test_memory_is_bounded_per_version_and_versions_no_longer_served_are_forgotten():
    stats = VersionStats(max_samples=50)
    for i in range(500):
        stats.record("3", latency_ms=1.0, failed=False, at=float(i))
        stats.record("4", latency_ms=1.0, failed=False, at=float(i))
    assert stats.summary(1e9, now=500.0)["3"]["requests"] == 50
    stats.forget(["4"])
    assert set(stats.summary(1e9, now=500.0)) == {"4"}


def test_percentile_is_nearest_rank():
    assert percentile([], 0.99) is None
    assert percentile([1.0], 0.99) == 1.0
    assert percentile([float(i) for i in range(1, 11)], 0.5) == 5.0


@pytest.mark.parametrize(
    ("stats", "breach"),
    [
        ({"requests": 40, "errors": 1, "p99_ms": 20.0}, None),
        ({"requests": 40, "errors": 3, "p99_ms": 20.0}, "error rate 7.5% (3 of 40) is over canary.max_error_rate 5.0%"),
        ({"requests": 40, "errors": 0, "p99_ms": 250.0}, "p99 latency 250.0 ms is over canary.max_p99_ms 100"),
        ({"requests": 4, "errors": 0, "p99_ms": 20.0}, "4 request(s) reached it during the step; canary.min_requests is 10"),
        (None, "0 request(s) reached it during the step; canary.min_requests is 10"),
    ],
)
def test_a_step_breaches_on_errors_latency_or_too_little_traffic(stats, breach):
    assert judge(stats, **LIMITS) == breach


def test_with_no_floor_a_step_without_traffic_holds():
    assert judge({"requests": 0, "errors": 0}, max_error_rate=0.0, max_p99_ms=None, min_requests=0) is None
