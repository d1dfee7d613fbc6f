"""Metric-learning blocks for face verification robust to fakes: miners, triplet/quadruplet losses, cosine head.

Every loss takes ``(embeddings [N, D], identity [N] long, is_fake [N] bool)``. Mining is vectorised
over a masked N x N distance matrix (no loop over anchors) and runs on detached distances; the
losses then read the chosen distances with gradients.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn


class Triplets(NamedTuple):
    """Anchor, positive and negative sample indices, one triplet per usable anchor."""

    anchor: torch.Tensor
    positive: torch.Tensor
    negative: torch.Tensor


class Quadruplets(NamedTuple):
    """Per real anchor with a real positive: its positive, real negative and fake (-1 where none)."""

    anchor: torch.Tensor
    positive: torch.Tensor
    negative: torch.Tensor
    fake: torch.Tensor


def pairwise_distances(embeddings: torch.Tensor) -> torch.Tensor:
    """N x N Euclidean distances, computed from differences: exact 0 for equal rows, with finite gradients."""
    # The matmul shortcut (|a|^2 + |b|^2 - 2ab) loses ~1e-3 to cancellation near zero distance.
    return torch.cdist(embeddings, embeddings, compute_mode="donot_use_mm_for_euclid_dist")


def _hardest(dist: torch.Tensor, mask: torch.Tensor, farthest: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, the index of the farthest (or nearest) column allowed by ``mask``, and whether one exists."""
    fill = float("-inf") if farthest else float("inf")
    masked = dist.masked_fill(~mask, fill)
    index = masked.argmax(1) if farthest else masked.argmin(1)
    return index, mask.any(1)


def batch_hard_triplets(dist: torch.Tensor, identity: torch.Tensor) -> Triplets:
    """Per anchor: the farthest same-identity sample and the nearest other-identity sample.

    Anchors without a positive (no other sample of their identity) or a negative are left out.
    """
    same = identity[:, None] == identity[None, :]
    not_self = ~torch.eye(len(identity), dtype=torch.bool, device=dist.device)
    positive, has_positive = _hardest(dist, same & not_self, farthest=True)
    negative, has_negative = _hardest(dist, ~same, farthest=False)
    anchor = torch.nonzero(has_positive & has_negative).squeeze(1)
    return Triplets(anchor, positive[anchor], negative[anchor])


def quadruplet_mining(dist: torch.Tensor, identity: torch.Tensor, is_fake: torch.Tensor) -> Quadruplets:
    """Per REAL anchor: farthest real positive, nearest real negative, nearest fake of the same identity.

    Only real anchors that have a real positive are returned; ``negative`` / ``fake`` are -1 for
    anchors without a real image of another identity / without a fake of their own identity.
    """
    real = ~is_fake
    same = identity[:, None] == identity[None, :]
    not_self = ~torch.eye(len(identity), dtype=torch.bool, device=dist.device)
    positive, has_positive = _hardest(dist, same & not_self & real[None, :], farthest=True)
    negative, has_negative = _hardest(dist, ~same & real[None, :], farthest=False)
    fake, has_fake = _hardest(dist, same & is_fake[None, :], farthest=False)
    anchor = torch.nonzero(real & has_positive).squeeze(1)
    missing = torch.full_like(anchor, -1)
    return Quadruplets(
        anchor,
        positive[anchor],
        torch.where(has_negative[anchor], negative[anchor], missing),
        torch.where(has_fake[anchor], fake[anchor], missing),
    )


def _mean_or_zero(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Mean of ``values``; a zero that keeps the graph when there are none."""
    return values.mean() if values.numel() else like.sum() * 0.0


class MarginLoss(nn.Module):
    """A loss made of named terms (``terms``) summed with weights (``term_weights``); the task logs each term."""

    term_weights: dict[str, float]

    def terms(self, embeddings: torch.Tensor, identity: torch.Tensor, is_fake: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def combine(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        """The weighted sum of the terms: the loss."""
        return sum(self.term_weights[name] * value for name, value in terms.items())

    def forward(self, embeddings: torch.Tensor, identity: torch.Tensor, is_fake: torch.Tensor | None = None) -> torch.Tensor:
        if is_fake is None:
            is_fake = torch.zeros_like(identity, dtype=torch.bool)
        return self.combine(self.terms(embeddings, identity, is_fake))


class TripletLoss(MarginLoss):
    """Batch-hard triplet loss ``mean relu(margin + d(a, p) - d(a, n))`` on L2 distances.

    Fakes count as images of their identity (the triplet baseline); ``is_fake`` is accepted for a
    uniform signature and ignored. ``normalize`` L2-normalises the embeddings first.
    """

    def __init__(self, margin: float = 1.0, normalize: bool = True):
        super().__init__()
        self.margin = margin
        self.normalize = normalize
        self.term_weights = {"triplet": 1.0}

    def terms(self, embeddings: torch.Tensor, identity: torch.Tensor, is_fake: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The one term, ``triplet``."""
        emb = F.normalize(embeddings, dim=1) if self.normalize else embeddings
        dist = pairwise_distances(emb)
        a, p, n = batch_hard_triplets(dist.detach(), identity)
        return {"triplet": _mean_or_zero(F.relu(self.margin + dist[a, p] - dist[a, n]), dist)}


class QuadrupletLoss(MarginLoss):
    """Real-vs-real and real-vs-fake margin loss per real anchor, on L2 distances d.

    ``loss = mean_a relu(m + d(a,p) - d(a,n_real)) + lambda_fake * mean_a relu(m + d(a,p) - d(a,fake))``
    with p the hardest real positive, n_real the hardest real negative and fake the hardest fake of
    the anchor's identity. Each mean runs over the anchors for which that term exists: an anchor
    without a real negative adds only a fake term, one without a fake only a real term, and one
    without a real positive nothing. A term with no anchors at all is 0.
    """

    def __init__(self, margin: float = 1.0, lambda_fake: float = 1.0, normalize: bool = True):
        super().__init__()
        self.margin = margin
        self.lambda_fake = lambda_fake
        self.normalize = normalize
        self.term_weights = {"real": 1.0, "fake": lambda_fake}

    def terms(self, embeddings: torch.Tensor, identity: torch.Tensor, is_fake: torch.Tensor) -> dict[str, torch.Tensor]:
        """The two loss terms, ``real`` and ``fake`` (before weighting), for logging."""
        emb = F.normalize(embeddings, dim=1) if self.normalize else embeddings
        dist = pairwise_distances(emb)
        q = quadruplet_mining(dist.detach(), identity, is_fake.bool())
        anchor_positive = dist[q.anchor, q.positive]
        has_neg, has_fake = q.negative >= 0, q.fake >= 0
        real_term = F.relu(self.margin + anchor_positive[has_neg] - dist[q.anchor[has_neg], q.negative[has_neg]])
        fake_term = F.relu(self.margin + anchor_positive[has_fake] - dist[q.anchor[has_fake], q.fake[has_fake]])
        return {"real": _mean_or_zero(real_term, dist), "fake": _mean_or_zero(fake_term, dist)}


class EmbeddingNet(nn.Module):
    """Pooled backbone features -> linear projection to ``embedding_dim`` -> L2 normalisation.

    ``flip_average``: in eval mode the embedding is that of the image plus that of its mirror image
    (then normalised), a standard face-verification test-time step; being part of the network, the
    ONNX export, predict and the service compute exactly what validation and test measured.
    """

    def __init__(self, backbone: nn.Module, embedding_dim: int = 128, flip_average: bool = False):
        super().__init__()
        self.backbone = backbone
        self.embedding_dim = embedding_dim
        self.flip_average = flip_average
        self.projection = nn.Linear(backbone.num_features, embedding_dim)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        features = self.projection(self.backbone(image))
        if self.flip_average and not self.training:
            features = F.normalize(features, dim=1) + F.normalize(self.projection(self.backbone(image.flip(-1))), dim=1)
        return F.normalize(features, dim=1)


class CosineClassifier(nn.Module):
    """Baseline++ identity head: ``scale * cos(embedding, class weight)`` logits, cross-entropy on reals.

    Both the features and the class weights are L2-normalised, so ``scale`` (inverse temperature)
    sets how peaked the softmax can get. Fakes are left out of the loss: they are not the person.
    """

    def __init__(self, embedding_dim: int, num_classes: int, scale: float = 10.0, margin: float = 0.0):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_dim))
        nn.init.xavier_uniform_(self.weight)
        self.scale = scale
        self.margin = margin

    def logits(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Scaled cosine similarity to every class, [N, num_classes]."""
        return self.scale * F.normalize(embeddings, dim=1) @ F.normalize(self.weight, dim=1).T

    def forward(self, embeddings: torch.Tensor, identity: torch.Tensor, is_fake: torch.Tensor) -> torch.Tensor:
        real = ~is_fake.bool()
        logits = self.logits(embeddings[real])
        if self.margin:  # CosFace: the true class's cosine must beat the others by ``margin``
            logits = logits - self.scale * self.margin * F.one_hot(identity[real], logits.shape[1])
        return F.cross_entropy(logits, identity[real]) if real.any() else logits.sum() * 0.0
