"""Tests for verification metrics: EER conventions vs sklearn, FNMR@FMR, AUC, and chunked evaluation."""

import doctest

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score, roc_curve

import pipeline.metrics.verification as verification
from pipeline.metrics.verification import (
    EmbeddingCollector,
    RocCurve,
    eer,
    far_frr_at,
    fnmr_at_fmr,
    metrics_from_histograms,
    pair_scores,
    roc_auc,
    score_histograms,
    verification_metrics,
)


def _sklearn_eer(pos, neg):
    """EER both ways with sklearn's ROC: argmin |FNR - FPR| over every distinct threshold."""
    y = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    fpr, tpr, thr = roc_curve(y, np.r_[pos, neg], drop_intermediate=False)
    fnr = 1 - tpr
    i = np.argmin(np.abs(fnr - fpr))
    return {"eer": (fpr[i] + fnr[i]) / 2, "eer_fnr": fnr[i], "threshold": thr[i]}, fpr, fnr


def _random_scores(seed, n_pos=300, n_neg=1100, rounding=None):
    rng = np.random.default_rng(seed)
    pos, neg = rng.normal(0.5, 0.25, n_pos), rng.normal(0.0, 0.3, n_neg)
    return (pos, neg) if rounding is None else (pos.round(rounding), neg.round(rounding))


@pytest.mark.parametrize("seed,rounding", [(0, None), (1, None), (2, 2), (3, 1)])
def test_eer_matches_sklearn_on_random_scores(seed, rounding):
    pos, neg = _random_scores(seed, rounding=rounding)
    expected, _, _ = _sklearn_eer(pos, neg)
    got = eer(pos, neg)
    assert got == pytest.approx(expected, abs=1e-12)
    assert 0.05 < got["eer"] < 0.5


def test_eer_perfectly_separable():
    pos, neg = np.array([0.7, 0.9, 0.8]), np.array([-0.2, 0.1, 0.3, 0.69])
    expected, _, _ = _sklearn_eer(pos, neg)
    got = eer(pos, neg)
    assert got == pytest.approx(expected)
    assert got["eer"] == got["eer_fnr"] == 0.0 and got["threshold"] == 0.7
    assert roc_auc(pos, neg) == 1.0


def test_conventions_differ_when_rates_do_not_meet():
    # No threshold gives FPR == FNR: the mean and the FNR at the crossing differ.
    got = eer([0.9, 0.8, 0.3], [0.1, 0.2, 0.35, 0.7])
    assert got["eer"] == pytest.approx((0.25 + 1 / 3) / 2) and got["eer_fnr"] == pytest.approx(1 / 3)


@pytest.mark.parametrize("fmr", [0.0, 1e-3, 1e-2, 0.1, 0.5])
def test_fnmr_at_fmr_matches_sklearn(fmr):
    pos, neg = _random_scores(4, rounding=2)
    _, fpr, fnr = _sklearn_eer(pos, neg)
    assert fnmr_at_fmr(pos, neg, fmr) == pytest.approx(fnr[fpr <= fmr].min())


def test_auc_matches_sklearn_with_ties():
    pos, neg = _random_scores(5, rounding=1)
    y = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    assert roc_auc(pos, neg) == pytest.approx(roc_auc_score(y, np.r_[pos, neg]))


def test_far_frr_at():
    pos, neg = _random_scores(6)
    got = far_frr_at(torch.tensor(pos), torch.tensor(neg), 0.25)
    assert got == {"far": np.mean(neg >= 0.25), "frr": np.mean(pos < 0.25)}


def test_histogram_curve_is_close_to_exact():
    pos, neg = _random_scores(7, n_pos=3000, n_neg=9000)
    bins = 20_000
    pos_hist = np.histogram(pos.clip(-1, 1), bins, (-1, 1))[0]
    neg_hist = np.histogram(neg.clip(-1, 1), bins, (-1, 1))[0]
    binned, exact = RocCurve.from_histograms(pos_hist, neg_hist).eer(), eer(pos, neg)
    assert binned["eer"] == pytest.approx(exact["eer"], abs=2e-3)
    assert binned["threshold"] == pytest.approx(exact["threshold"], abs=2 / bins + 1e-3)


def _embeddings(n=300, ids=25, dim=16, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    identity = torch.randint(0, ids, (n,), generator=g)
    is_fake = torch.rand(n, generator=g) < 0.25
    emb = torch.randn(ids, dim, generator=g)[identity] + 0.9 * torch.randn(n, dim, generator=g)
    return (emb + 0.7 * is_fake[:, None]).to(dtype), identity, is_fake


def test_pair_scores_counts():
    identity = torch.tensor([0, 0, 0, 1, 1, 2])
    is_fake = torch.tensor([False, False, True, False, True, False])
    scores = pair_scores(torch.randn(6, 4), identity, is_fake)
    # Reals: 0,1 (id 0), 3 (id 1), 5 (id 2); fakes: 2 (id 0), 4 (id 1).
    assert {k: len(v) for k, v in scores.items()} == {"positive": 1, "negative_real": 5, "fake": 3}


@pytest.mark.parametrize("chunk_size", [5, 64])
def test_chunked_histograms_equal_unchunked(chunk_size):
    emb, identity, is_fake = _embeddings()
    full = score_histograms(emb, identity, is_fake, chunk_size=len(emb))
    chunked = score_histograms(emb, identity, is_fake, chunk_size=chunk_size)
    for name in full:
        np.testing.assert_array_equal(chunked[name], full[name])
    assert verification_metrics(emb, identity, is_fake, chunk_size=chunk_size) == verification_metrics(
        emb, identity, is_fake, chunk_size=len(emb)
    )


def test_chunked_histograms_equal_exact_pair_scores():
    emb, identity, is_fake = _embeddings(seed=1)
    exact = pair_scores(emb, identity, is_fake)
    hists = score_histograms(emb, identity, is_fake, chunk_size=32)
    for name, scores in exact.items():
        expected = torch.histc(scores.clamp(-1, 1), 20_000, -1, 1).long().numpy()
        np.testing.assert_array_equal(hists[name], expected)


def test_histogram_metrics_close_to_exact():
    emb, identity, is_fake = _embeddings(seed=2, dtype=torch.float32)
    exact = pair_scores(emb, identity, is_fake)
    metrics = metrics_from_histograms(score_histograms(emb, identity, is_fake, chunk_size=50))
    real = eer(exact["positive"], exact["negative_real"])
    fake = eer(exact["positive"], exact["fake"])
    assert metrics["eer_real"] == pytest.approx(real["eer"], abs=1e-3)
    assert metrics["eer_real_fnr"] == pytest.approx(real["eer_fnr"], abs=1e-3)
    assert metrics["eer_fake"] == pytest.approx(fake["eer"], abs=1e-3)
    assert metrics["eer_fake_fnr"] == pytest.approx(fake["eer_fnr"], abs=1e-3)
    assert metrics["threshold"] == pytest.approx(real["threshold"], abs=1e-3)
    assert metrics["auc_real"] == pytest.approx(roc_auc(exact["positive"], exact["negative_real"]), abs=1e-3)
    assert metrics["fnmr_at_fmr_1e-2"] == pytest.approx(
        fnmr_at_fmr(exact["positive"], exact["negative_real"], 1e-2), abs=0.02
    )
    assert metrics["num_fake_pairs"] == len(exact["fake"])
    assert metrics["eer_mean"] == pytest.approx((metrics["eer_real"] + metrics["eer_fake"]) / 2)


def test_scores_crowded_near_one_are_measured_exactly():
    """An early or collapsing embedding puts every score within 1e-4 of 1: one histogram bin. The
    metrics of a set of that size are exact: they match a brute-force EER over the pairs' scores."""
    emb, identity, is_fake = _embeddings(seed=4, dtype=torch.float32)
    crowded = 1 + 0.003 * emb
    scores = {k: v.numpy().astype(np.float64) for k, v in pair_scores(crowded, identity, is_fake).items()}
    assert scores["negative_real"].min() > 1 - 1e-4
    metrics = verification_metrics(crowded, identity, is_fake, threshold=0.99999)
    expected = _sklearn_eer(scores["positive"], scores["negative_real"])[0]
    assert metrics["eer_real"] == pytest.approx(expected["eer"], abs=1e-9)
    assert metrics["eer_real_fnr"] == pytest.approx(expected["eer_fnr"], abs=1e-9)
    assert metrics["eer_real"] < 0.2  # the histograms read 0.5 here: no threshold inside the one bin
    assert metrics["eer_fake"] == pytest.approx(_sklearn_eer(scores["positive"], scores["fake"])[0]["eer"], abs=1e-9)
    assert metrics["far_real"] == pytest.approx(np.mean(scores["negative_real"] >= 0.99999), abs=1e-9)
    assert metrics["frr"] == pytest.approx(np.mean(scores["positive"] < 0.99999), abs=1e-9)
    assert metrics_from_histograms(score_histograms(crowded, identity, is_fake))["eer_real"] > 0.4


def test_verification_metrics_without_fakes_reports_nan_fake_metrics():
    emb, identity, is_fake = _embeddings(n=60)
    metrics = verification_metrics(emb[~is_fake], identity[~is_fake], is_fake[~is_fake])
    assert np.isnan(metrics["eer_fake"]) and not np.isnan(metrics["eer_real"])


def test_docstring_examples():
    assert doctest.testmod(verification).failed == 0


def test_rates_at_a_frozen_threshold_match_exact_counts():
    g = torch.Generator().manual_seed(3)
    identity = torch.arange(12).repeat_interleave(6)
    is_fake = (torch.arange(72) % 6) >= 4
    emb = torch.randn(12, 16, generator=g)[identity] + 0.9 * torch.randn(72, 16, generator=g)
    threshold = verification_metrics(emb, identity, is_fake)["threshold"]
    binned = verification_metrics(emb, identity, is_fake, threshold=threshold)
    scores = pair_scores(emb, identity, is_fake)
    real = far_frr_at(scores["positive"], scores["negative_real"], threshold)
    fake = far_frr_at(scores["positive"], scores["fake"], threshold)
    assert binned["frr"] == pytest.approx(real["frr"], abs=0.02)
    assert binned["far_real"] == pytest.approx(real["far"], abs=0.02)
    assert binned["far_fake"] == pytest.approx(fake["far"], abs=0.02)
    assert binned["frr"] == pytest.approx(binned["far_real"], abs=0.1)  # the EER point


def test_embedding_collector_counts_each_sample_once():
    collector = EmbeddingCollector()
    emb = torch.randn(6, 4)
    identity, is_fake = torch.tensor([0, 0, 1, 1, 2, 2]), torch.tensor([0, 1, 0, 0, 1, 0]).bool()
    index = torch.arange(6)
    collector.update(emb[3:], identity[3:], is_fake[3:], index[3:])
    collector.update(emb, identity, is_fake, index)  # a replicated copy, as on another rank
    out = collector.compute()
    assert out["index"].tolist() == list(range(6))
    assert torch.equal(out["embeddings"], emb) and torch.equal(out["is_fake"], is_fake)
    assert torch.equal(out["identity"], identity)
