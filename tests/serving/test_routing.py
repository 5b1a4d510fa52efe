"""How the router splits traffic and which weights it takes (no Ray needed)."""

from __future__ import annotations

import math
from collections import Counter

import pytest

from airflow_provider_rayops.serving.app import checked_weights, pick_version


def test_random_picks_follow_the_weights_and_a_zero_weight_is_never_picked():
    weights = {"3": 90.0, "4": 10.0, "5": 0.0}
    picks = Counter(pick_version(weights, None) for _ in range(20_000))
    assert set(picks) == {"3", "4"}
    assert 0.085 < picks["4"] / 20_000 < 0.115  # 10% within 15% of itself, 20,000 draws (sd 0.2%)


def test_a_key_stays_on_its_version_and_keys_spread_by_weight():
    weights = {"3": 50.0, "4": 50.0}
    assert all(len({pick_version(weights, f"user-{k}") for _ in range(5)}) == 1 for k in range(50))
    spread = Counter(pick_version(weights, f"user-{k}") for k in range(4000))
    assert 0.45 < spread["4"] / 4000 < 0.55
    # moving weight to the canary moves only keys onto it, never off it
    before = {k: pick_version({"3": 90.0, "4": 10.0}, f"user-{k}") for k in range(2000)}
    after = {k: pick_version({"3": 50.0, "4": 50.0}, f"user-{k}") for k in range(2000)}
    assert all(after[k] == "4" for k in before if before[k] == "4")


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ({"9": 1}, "weights name version(s) ['9'] the app does not serve"),
        ({"3": -1, "4": 2}, "must be finite, non-negative and not all zero"),
        ({"3": 0, "4": 0}, "not all zero"),
        ({"3": math.nan, "4": 1}, "finite"),
        ({"3": math.inf}, "finite"),
    ],
)
def test_weights_that_cannot_route_are_refused(weights, message):
    with pytest.raises(ValueError, match="weights") as caught:
        checked_weights(weights, ["3", "4"])
    assert message in str(caught.value)


def test_weights_are_floats_by_version_name():
    assert checked_weights({3: 1, "4": 0}, ["3", "4"]) == {"3": 1.0, "4": 0.0}
