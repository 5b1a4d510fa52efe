"""Each drift test against scipy (or numpy) on the same inputs, and the preset's choice of test."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from scipy.spatial import distance

from airflow_provider_rayops.drift import methods


def _sorted(values) -> np.ndarray:
    return np.sort(np.asarray(values, dtype=np.float64))


@pytest.mark.parametrize(
    ("n_ref", "n_cur", "seed"),
    [(1000, 1000, 0), (1000, 1500, 1), (7, 13, 2), (5000, 333, 3), (1, 4, 4), (2048, 4096, 5)],
)
def test_wasserstein_matches_scipy_divided_by_the_reference_std(n_ref, n_cur, seed):
    rng = np.random.default_rng(seed)
    ref = rng.normal(0, 2, n_ref)
    cur = rng.normal(0.3, 2.5, n_cur)
    expected = stats.wasserstein_distance(ref, cur) / max(np.std(ref), 0.001)
    assert methods.wasserstein_normed(_sorted(ref), _sorted(cur)) == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_wasserstein_matches_scipy_with_ties_and_a_constant_reference():
    rng = np.random.default_rng(7)
    ref = rng.integers(0, 4, 999).astype(float)
    cur = rng.integers(0, 6, 1200).astype(float)
    assert methods.wasserstein_normed(_sorted(ref), _sorted(cur)) == pytest.approx(
        stats.wasserstein_distance(ref, cur) / np.std(ref), rel=1e-12
    )
    constant = np.full(50, 3.0)  # std 0: divided by 0.001, as the preset does
    assert methods.wasserstein_normed(constant, _sorted(cur)) == pytest.approx(
        stats.wasserstein_distance(constant, cur) / 0.001, rel=1e-12
    )


def test_sturges_bins_and_counts_match_numpy():
    rng = np.random.default_rng(11)
    ref, cur = rng.exponential(1.0, 3001), rng.exponential(1.4, 777)
    edges = methods.sturges_edges(_sorted(ref), _sorted(cur))
    np.testing.assert_array_equal(edges, np.histogram_bin_edges(np.concatenate([ref, cur]), bins="sturges"))
    np.testing.assert_array_equal(methods.histogram_sorted(_sorted(ref), edges), np.histogram(ref, edges)[0])
    np.testing.assert_array_equal(methods.histogram_sorted(_sorted(cur), edges), np.histogram(cur, edges)[0])


def test_jensenshannon_matches_scipy_on_the_shares():
    ref = {"a": 500, "b": 300, "c": 200}
    cur = {"a": 100, "b": 300, "d": 50}
    keys, ref_shares, cur_shares = methods.shares(ref, cur)
    assert keys == ["a", "b", "c", "d"]
    expected = distance.jensenshannon([0.5, 0.3, 0.2, 0.0], [100 / 450, 300 / 450, 0.0, 50 / 450])
    assert methods.jensenshannon(ref_shares, cur_shares) == pytest.approx(expected, rel=1e-12)


def test_psi_fills_empty_cells_the_way_the_preset_does():
    ref_shares = np.array([0.5, 0.5, 0.0])
    cur_shares = np.array([0.25, 0.25, 0.5])
    filled = np.array([0.5, 0.5, 0.0001])  # the smallest share is above 1e-4: empty cells get 1e-4
    expected = float(np.sum((filled - cur_shares) * np.log(filled / cur_shares)))
    assert methods.psi(ref_shares, cur_shares) == pytest.approx(expected, rel=1e-12)
    assert methods.psi(np.array([0.3, 0.7]), np.array([0.3, 0.7])) == 0.0


def test_chisquare_matches_scipy_with_expected_counts_from_the_reference_shares():
    ref = {"x": 40, "y": 35, "z": 25}
    cur = {"x": 90, "y": 60, "z": 50}
    expected = stats.chisquare([90, 60, 50], [40 * 2.0, 35 * 2.0, 25 * 2.0]).pvalue
    assert methods.chisquare_p_value(ref, cur) == pytest.approx(expected, rel=1e-12)


def test_z_test_matches_a_two_by_two_chi_square_without_continuity_correction():
    ref = {True: 300, False: 700}
    cur = {True: 380, False: 620}
    table = [[700, 300], [620, 380]]
    expected = stats.chi2_contingency(table, correction=False).pvalue  # z^2 is that chi-square
    assert methods.z_p_value(ref, cur) == pytest.approx(expected, rel=1e-9)
    assert methods.z_p_value({"a": 10}, {"a": 30}) == 1.0


def test_ks_is_scipys_two_sample_test():
    rng = np.random.default_rng(5)
    ref, cur = rng.normal(0, 1, 400), rng.normal(0.2, 1, 300)
    assert methods.ks_p_value(_sorted(ref), _sorted(cur)) == stats.ks_2samp(ref, cur).pvalue


@pytest.mark.parametrize(
    ("kind", "rows", "distinct", "expected"),
    [
        ("numeric", 1001, 6, "wasserstein"),
        ("numeric", 1001, 5, "jensenshannon"),
        ("categorical", 5000, 40, "jensenshannon"),
        ("numeric", 1000, 6, "ks"),
        ("numeric", 1000, 5, "chisquare"),
        ("numeric", 1000, 2, "z"),
        ("categorical", 10, 3, "chisquare"),
        ("categorical", 10, 2, "z"),
    ],
)
def test_the_default_test_follows_the_preset(kind, rows, distinct, expected):
    assert methods.default_method(kind=kind, reference_rows=rows, distinct_values=distinct) == expected


@pytest.mark.parametrize(
    ("method", "statistic", "threshold", "drifted"),
    [
        ("wasserstein", 0.1, 0.1, True),
        ("wasserstein", 0.099, 0.1, False),
        ("ks", 0.05, 0.05, True),
        ("chisquare", 0.05, 0.05, False),
        ("z", 0.049, 0.05, True),
        ("psi", float("nan"), 0.1, False),
    ],
)
def test_each_test_drifts_on_its_own_side_of_the_threshold(method, statistic, threshold, drifted):
    assert methods.judge(method, statistic, threshold).drifted is drifted
