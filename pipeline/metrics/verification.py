"""Face-verification metrics: EER, FNMR at a fixed FMR, ROC AUC, and chunked evaluation over all pairs.

Conventions: a pair is accepted as "same person" when its score (cosine similarity) is
``>= threshold``. Over genuine (positive) scores P and impostor (negative) scores Q,

    FPR(t) = FMR(t) = FAR(t) = #{q in Q : q >= t} / |Q|
    FNR(t) = FNMR(t) = FRR(t) = #{p in P : p < t} / |P|

evaluated at every distinct score (plus t = +inf, where nothing is accepted), as sklearn's
``roc_curve(..., drop_intermediate=False)`` does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

DEFAULT_BINS = 20_000
# Up to this many images every pair's score is held (2048: 2.1M pairs, about 0.25 s and 110 MB) and the metrics are
# exact; histograms resolve a threshold to 1e-4 only, too coarse for an embedding whose scores crowd near 1.
EXACT_MAX_IMAGES = 2048
_PAIR_CHUNK = 1 << 20
_HISTC_EXACT = 1 << 24


def _as_numpy(values) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=np.float64).ravel()


@dataclass(frozen=True)
class RocCurve:
    """Operating points, thresholds descending (the first is +inf), with their FPR and FNR."""

    thresholds: np.ndarray
    fpr: np.ndarray
    fnr: np.ndarray

    @classmethod
    def from_counts(cls, thresholds: np.ndarray, pos_counts: np.ndarray, neg_counts: np.ndarray) -> RocCurve:
        """Curve from genuine/impostor counts at each score level, levels given in descending order."""
        tps, fps = np.cumsum(pos_counts), np.cumsum(neg_counts)
        if tps.size == 0 or tps[-1] == 0 or fps[-1] == 0:
            raise ValueError("ROC needs at least one positive and one negative score")
        # Same arithmetic as sklearn (rates = cumulative / total, fnr = 1 - tpr) so ties break alike.
        tpr = np.concatenate([[0.0], tps / tps[-1]])
        fpr = np.concatenate([[0.0], fps / fps[-1]])
        return cls(np.concatenate([[np.inf], thresholds]), fpr, 1.0 - tpr)

    @classmethod
    def from_scores(cls, pos_scores, neg_scores) -> RocCurve:
        """Exact curve: one operating point per distinct score."""
        pos, neg = _as_numpy(pos_scores), _as_numpy(neg_scores)
        levels, inverse = np.unique(np.concatenate([pos, neg]), return_inverse=True)
        pos_counts = np.bincount(inverse[: len(pos)], minlength=len(levels))
        neg_counts = np.bincount(inverse[len(pos) :], minlength=len(levels))
        return cls.from_counts(levels[::-1], pos_counts[::-1], neg_counts[::-1])

    @classmethod
    def from_histograms(cls, pos_hist, neg_hist, low: float = -1.0, high: float = 1.0) -> RocCurve:
        """Curve from score histograms on equal bins over [low, high]; thresholds are lower bin edges.

        Scores within one bin are indistinguishable, so a threshold is only resolved to the bin
        width ``(high - low) / bins`` and rates are exact at those thresholds.
        """
        pos_hist, neg_hist = _as_numpy(pos_hist), _as_numpy(neg_hist)
        lower_edges = np.linspace(low, high, len(pos_hist) + 1)[:-1]
        occupied = (pos_hist + neg_hist) > 0
        return cls.from_counts(lower_edges[occupied][::-1], pos_hist[occupied][::-1], neg_hist[occupied][::-1])

    def eer(self) -> dict[str, float]:
        """Equal error rate at the first point (highest threshold) minimising |FNR - FPR|.

        ``eer`` = (FPR + FNR) / 2 there; ``eer_fnr`` = FNR there (the competition scorer's number);
        ``threshold`` = the score threshold of that point.
        """
        i = int(np.argmin(np.abs(self.fnr - self.fpr)))
        return {
            "eer": float((self.fpr[i] + self.fnr[i]) / 2),
            "eer_fnr": float(self.fnr[i]),
            "threshold": float(self.thresholds[i]),
        }

    def fnmr_at_fmr(self, fmr: float) -> float:
        """Lowest FNR among thresholds whose FPR is at most ``fmr``."""
        return float(self.fnr[self.fpr <= fmr].min())

    def auc(self) -> float:
        """Area under the ROC curve (trapezoids over (FPR, TPR), ties count half)."""
        return float(np.trapezoid(1.0 - self.fnr, self.fpr))


def eer(pos_scores, neg_scores) -> dict[str, float]:
    """Equal error rate of genuine scores vs impostor scores (higher score = same person).

    At the operating point i minimising |FNR_i - FPR_i| (first, i.e. highest threshold, on ties):
    ``eer = (FPR_i + FNR_i) / 2``, ``eer_fnr = FNR_i`` and ``threshold = t_i``.

    >>> {name: round(value, 3) for name, value in eer([0.9, 0.8, 0.3], [0.1, 0.2, 0.35, 0.7]).items()}
    {'eer': 0.292, 'eer_fnr': 0.333, 'threshold': 0.7}
    >>> eer([0.9, 0.8], [0.1, 0.2])["eer"]
    0.0
    """
    return RocCurve.from_scores(pos_scores, neg_scores).eer()


def fnmr_at_fmr(pos_scores, neg_scores, fmr: float) -> float:
    """FNMR at the lowest threshold whose FMR is at most ``fmr``: min over t of FNR(t) s.t. FPR(t) <= fmr.

    >>> fnmr_at_fmr([0.9, 0.8, 0.3], [0.1, 0.2, 0.35, 0.7], fmr=0.0)
    0.33333333333333337
    """
    return RocCurve.from_scores(pos_scores, neg_scores).fnmr_at_fmr(fmr)


def roc_auc(pos_scores, neg_scores) -> float:
    """ROC AUC = P(p > q) + P(p = q) / 2 for a random genuine score p and impostor score q.

    >>> roc_auc([0.9, 0.8, 0.3], [0.1, 0.2, 0.35, 0.7])
    0.8333333333333333
    """
    return RocCurve.from_scores(pos_scores, neg_scores).auc()


def far_frr_at(pos_scores, neg_scores, threshold: float) -> dict[str, float]:
    """False accept rate #{q >= t}/|Q| and false reject rate #{p < t}/|P| at threshold t.

    >>> far_frr_at([0.9, 0.8, 0.3], [0.1, 0.2, 0.35, 0.7], threshold=0.5)
    {'far': 0.25, 'frr': 0.3333333333333333}
    """
    pos, neg = _as_numpy(pos_scores), _as_numpy(neg_scores)
    return {"far": float(np.mean(neg >= threshold)), "frr": float(np.mean(pos < threshold))}


def rates_at_threshold(counts: dict[str, np.ndarray], threshold: float) -> dict[str, float]:
    """FRR of positives and FAR of real negatives and of fakes at ``threshold``, from score histograms.

    Scores are counted as accepted when their bin's lower edge is ``>= threshold``; a threshold read
    from a curve of histograms with the same bins (``RocCurve.from_histograms``) is such an edge, so
    the rates are exact for the binned scores.
    """
    bins = len(counts["positive"])
    edges = np.linspace(-1.0, 1.0, bins + 1)[:-1]
    accepted = edges >= threshold - 1e-9

    def share(hist: np.ndarray, mask: np.ndarray) -> float:
        total = hist.sum()
        return float(hist[mask].sum() / total) if total else float("nan")

    return {
        "frr": share(counts["positive"], ~accepted),
        "far_real": share(counts["negative_real"], accepted),
        "far_fake": share(counts["fake"], accepted),
    }


def _run_pairs(row_runs: torch.Tensor, starts: torch.Tensor, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Index pairs (i, starts[i] + m) for m < counts[i], for every row i, without a Python loop."""
    rows = torch.repeat_interleave(row_runs, counts)
    offsets = torch.cumsum(counts, 0) - counts
    within = torch.arange(len(rows)) - torch.repeat_interleave(offsets, counts)
    return rows, torch.repeat_interleave(starts, counts) + within


def _sorted_pairs(identity: torch.Tensor, is_fake: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Reals and fakes each sorted by identity, with the positive (i < j) and real-fake pair indices.

    Returns (real order, fake order, positive rows, positive cols, fake rows, fake cols); pair indices
    point into the sorted real / sorted fake lists.
    """
    real_idx = torch.nonzero(~is_fake).squeeze(1)
    fake_idx = torch.nonzero(is_fake).squeeze(1)
    real_idx = real_idx[torch.argsort(identity[real_idx], stable=True)]
    fake_idx = fake_idx[torch.argsort(identity[fake_idx], stable=True)]
    real_ids, fake_ids = identity[real_idx], identity[fake_idx]
    positions = torch.arange(len(real_ids))
    run_end = torch.searchsorted(real_ids, real_ids, right=True)
    pos_rows, pos_cols = _run_pairs(positions, positions + 1, run_end - positions - 1)
    fake_start = torch.searchsorted(fake_ids, real_ids)
    fake_count = torch.searchsorted(fake_ids, real_ids, right=True) - fake_start
    fake_rows, fake_cols = _run_pairs(positions, fake_start, fake_count)
    return real_idx, fake_idx, pos_rows, pos_cols, fake_rows, fake_cols


def pair_scores(embeddings: torch.Tensor, identity: torch.Tensor, is_fake: torch.Tensor) -> dict[str, torch.Tensor]:
    """Cosine similarities of every positive, real-negative and fake pair (exact, N^2 memory).

    positive: same identity, both real; negative_real: different identities, both real;
    fake: a real and a fake image of the same identity. Each unordered pair counts once.
    """
    e = F.normalize(embeddings.detach(), dim=1)
    sim = e @ e.T
    same = identity[:, None] == identity[None, :]
    real = ~is_fake
    upper = torch.ones_like(same).triu(1)
    both_real = real[:, None] & real[None, :] & upper
    return {
        "positive": sim[same & both_real],
        "negative_real": sim[~same & both_real],
        "fake": sim[same & real[:, None] & is_fake[None, :]],
    }


def score_histograms(
    embeddings: torch.Tensor,
    identity: torch.Tensor,
    is_fake: torch.Tensor,
    chunk_size: int = 1024,
    bins: int = DEFAULT_BINS,
) -> dict[str, np.ndarray]:
    """Histograms (``bins`` equal bins over [-1, 1]) of positive, negative_real and fake pair scores.

    The real x real similarity matrix is visited in blocks of ``chunk_size`` rows (upper triangle
    only); the histogram of all real pairs minus that of the positives gives the negatives, so peak
    memory is O(chunk_size * N + number of positive and fake pairs), never O(N^2).
    """
    dtype = torch.float64 if embeddings.dtype == torch.float64 else torch.float32
    e = F.normalize(embeddings.detach().cpu().to(dtype), dim=1)
    identity, is_fake = identity.detach().cpu(), is_fake.detach().cpu().bool()
    real_idx, fake_idx, pos_rows, pos_cols, fake_rows, fake_cols = _sorted_pairs(identity, is_fake)
    reals, fakes = e[real_idx], e[fake_idx]

    def hist(scores: torch.Tensor) -> torch.Tensor:
        # histc counts in the input dtype: keep each call below 2**24 values so float32 counts stay exact.
        parts = scores.clamp(-1, 1).reshape(-1).split(_HISTC_EXACT)
        return sum((torch.histc(p, bins, -1, 1).double() for p in parts), torch.zeros(bins, dtype=torch.float64))

    all_real = torch.zeros(bins, dtype=torch.float64)
    positive = torch.zeros(bins, dtype=torch.float64)
    for start in range(0, len(reals), chunk_size):
        stop = min(start + chunk_size, len(reals))
        block = reals[start:stop]
        diagonal = block @ block.T
        rest = block @ reals[stop:].T
        upper = torch.triu_indices(stop - start, stop - start, offset=1)
        all_real += hist(diagonal[upper[0], upper[1]]) + hist(rest)
        lo, hi = torch.searchsorted(pos_rows, torch.tensor([start, stop])).tolist()
        rows, cols = pos_rows[lo:hi] - start, pos_cols[lo:hi]
        inside = cols < stop
        # Positives are read from the same blocks so they fall in exactly the bins counted above.
        positive += hist(diagonal[rows[inside], cols[inside] - start])
        positive += hist(rest[rows[~inside], cols[~inside] - stop])
    fake = torch.zeros(bins, dtype=torch.float64)
    for start in range(0, len(fake_rows), _PAIR_CHUNK):
        rows, cols = fake_rows[start : start + _PAIR_CHUNK], fake_cols[start : start + _PAIR_CHUNK]
        fake += hist((reals[rows] * fakes[cols]).sum(1))
    return {
        "positive": positive.long().numpy(),
        "negative_real": (all_real - positive).long().numpy(),
        "fake": fake.long().numpy(),
    }


def verification_metrics(
    embeddings: torch.Tensor,
    identity: torch.Tensor,
    is_fake: torch.Tensor,
    chunk_size: int = 1024,
    bins: int = DEFAULT_BINS,
    threshold: float | None = None,
    counts: dict[str, np.ndarray] | None = None,
) -> dict[str, float]:
    """EER (both conventions), FNMR@FMR, AUC over ALL pairs of the embeddings.

    eer_real: positive vs real-negative pairs; eer_fake: positive vs fake pairs; ``*_fnr`` the
    competition's FNR-at-crossing variant; eer_mean = (eer_real + eer_fake) / 2 (model selection);
    threshold: cosine threshold at the eer_real point; fnmr_at_fmr_1e-2/1e-3 on real negatives.
    Exact (every pair's score held) up to ``EXACT_MAX_IMAGES`` images; above, from score histograms
    (``counts`` if given) binned to 2 / ``bins`` (1e-4 by default). Fake metrics are NaN without fake
    pairs. With a fixed ``threshold`` (frozen on val), also ``frr``, ``far_real`` and ``far_fake`` at it.
    """
    if len(embeddings) <= EXACT_MAX_IMAGES:
        return metrics_from_scores(pair_scores(embeddings, identity, is_fake), threshold)
    counts = counts if counts is not None else score_histograms(embeddings, identity, is_fake, chunk_size, bins)
    return metrics_from_histograms(counts, threshold)


def curve_metrics(real: RocCurve, fake: RocCurve | None) -> dict[str, float]:
    """The EER, FNMR@FMR and AUC entries of :func:`verification_metrics` from its two ROC curves."""
    real_eer = real.eer()
    out = {"eer_real": real_eer["eer"], "eer_real_fnr": real_eer["eer_fnr"], "threshold": real_eer["threshold"],
           "fnmr_at_fmr_1e-2": real.fnmr_at_fmr(1e-2), "fnmr_at_fmr_1e-3": real.fnmr_at_fmr(1e-3),
           "auc_real": real.auc(), "eer_fake": float("nan"), "eer_fake_fnr": float("nan"), "auc_fake": float("nan")}
    if fake is not None:
        fake_eer = fake.eer()
        out.update(eer_fake=fake_eer["eer"], eer_fake_fnr=fake_eer["eer_fnr"], auc_fake=fake.auc())
    out["eer_mean"] = (out["eer_real"] + out["eer_fake"]) / 2
    return out


def metrics_from_scores(scores: dict[str, torch.Tensor], threshold: float | None = None) -> dict[str, float]:
    """The metrics of :func:`verification_metrics` from every pair's score (``pair_scores``), exactly."""
    scores = {name: _as_numpy(values) for name, values in scores.items()}
    positive, fake = scores["positive"], scores["fake"]
    out = curve_metrics(RocCurve.from_scores(positive, scores["negative_real"]),
                        RocCurve.from_scores(positive, fake) if len(fake) else None)
    out.update({f"num_{name}_pairs": float(len(values)) for name, values in scores.items()})
    if threshold is not None:
        out.update(frr=float(np.mean(positive < threshold)), far_real=float(np.mean(scores["negative_real"] >= threshold)),
                   far_fake=float(np.mean(fake >= threshold)) if len(fake) else float("nan"))
    return out


def metrics_from_histograms(counts: dict[str, np.ndarray], threshold: float | None = None) -> dict[str, float]:
    """The metrics of :func:`verification_metrics` from ``score_histograms`` counts."""
    fake = RocCurve.from_histograms(counts["positive"], counts["fake"]) if counts["fake"].sum() > 0 else None
    out = curve_metrics(RocCurve.from_histograms(counts["positive"], counts["negative_real"]), fake)
    out.update({f"num_{name}_pairs": float(c.sum()) for name, c in counts.items()})
    if threshold is not None:
        out.update(rates_at_threshold(counts, threshold))
    return out


class EmbeddingCollector(Metric):
    """Collects an epoch's embeddings, identities, fake flags and sample indices; under DDP the
    states are gathered from every rank (uneven sizes included) when ``compute`` runs.

    ``compute`` returns ``{"embeddings", "identity", "is_fake", "index"}`` sorted by sample index
    with repeats dropped, so padded or replicated evaluation data is counted once.
    """

    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        for name in ("embeddings", "identity", "is_fake", "index"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, embeddings: torch.Tensor, identity: torch.Tensor, is_fake: torch.Tensor, index: torch.Tensor) -> None:
        self.embeddings.append(embeddings.detach().float())
        self.identity.append(identity.detach())
        self.is_fake.append(is_fake.detach().bool())
        self.index.append(index.detach())

    def compute(self) -> dict[str, torch.Tensor]:
        states = {name: dim_zero_cat(getattr(self, name)) for name in ("embeddings", "identity", "is_fake", "index")}
        index, order = torch.sort(states["index"], stable=True)
        first = torch.ones_like(index, dtype=torch.bool)
        first[1:] = index[1:] != index[:-1]
        keep = order[first]
        return {name: value[keep] for name, value in states.items()}
