"""Classification losses selectable from ``hyp.loss``; each works for binary and multiclass logits.

Shapes: multiclass logits ``[N, C]`` with integer targets ``[N]``; binary logits ``[N]`` (or
``[N, 1]``) with 0/1 targets ``[N]``. Class weights are a list (one per class; for binary,
``[w_negative, w_positive]``), ``null``, or ``"balanced"``: ``n_samples / (n_classes * count_c)``
computed from the training split, which the task passes in through ``set_class_counts``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss

from pipeline.utils.errors import UserError

WeightSpec = Sequence[float] | str | None


def balanced_class_weights(counts: Sequence[int]) -> torch.Tensor:
    """``n / (k * count_c)`` per class (sklearn's "balanced"); empty classes get weight 0."""
    counts_t = torch.as_tensor(counts, dtype=torch.float32)
    weights = counts_t.sum() / (len(counts_t) * counts_t.clamp(min=1))
    return torch.where(counts_t > 0, weights, torch.zeros_like(weights))


def _is_binary(logits: torch.Tensor) -> bool:
    return logits.ndim == 1 or (logits.ndim == 2 and logits.shape[1] == 1)


class WeightedLoss(nn.Module):
    """Base for losses with optional per-class weights (a list, or "balanced" from class counts)."""

    def __init__(self, weight: WeightSpec = None) -> None:
        super().__init__()
        if isinstance(weight, str) and weight != "balanced":
            raise UserError(f"hyp.loss.weight: '{weight}' is not valid (use a list, null or 'balanced')")
        self.weight_spec = weight
        fixed = None if weight is None or isinstance(weight, str) else torch.as_tensor(list(weight), dtype=torch.float32)
        self.register_buffer("class_weight", fixed, persistent=False)

    def set_class_counts(self, counts: Sequence[int]) -> None:
        """Resolve ``weight: balanced`` from the training split's class counts."""
        if self.weight_spec == "balanced":
            self.class_weight = balanced_class_weights(counts)

    def _weight(self, num_classes: int, device: torch.device) -> torch.Tensor | None:
        if self.weight_spec == "balanced" and self.class_weight is None:
            raise RuntimeError("weight 'balanced' needs set_class_counts() before the first batch")
        if self.class_weight is None:
            return None
        if len(self.class_weight) != num_classes:
            raise UserError(
                f"hyp.loss.weight: {len(self.class_weight)} weights given for {num_classes} classes"
            )
        return self.class_weight.to(device)

    def _per_sample_weight(self, target: torch.Tensor, num_classes: int) -> torch.Tensor | None:
        weight = self._weight(num_classes, target.device)
        return None if weight is None else weight[target.long()]


class CrossEntropyLoss(WeightedLoss):
    """Cross entropy (softmax for ``[N, C]``, sigmoid BCE for binary) with weights and label smoothing.

    Binary label smoothing moves targets to ``y * (1 - s) + s / 2``, matching the multiclass rule.
    """

    def __init__(self, weight: WeightSpec = None, label_smoothing: float = 0.0) -> None:
        super().__init__(weight)
        self.label_smoothing = label_smoothing

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if _is_binary(logits):
            logits = logits.reshape(-1)
            soft = target.float() * (1 - self.label_smoothing) + 0.5 * self.label_smoothing
            loss = F.binary_cross_entropy_with_logits(logits, soft, reduction="none")
            sample_weight = self._per_sample_weight(target, 2)
            if sample_weight is None:
                return loss.mean()
            return (loss * sample_weight).sum() / sample_weight.sum()
        return F.cross_entropy(
            logits, target.long(), weight=self._weight(logits.shape[1], logits.device),
            label_smoothing=self.label_smoothing,
        )


class FocalLoss(WeightedLoss):
    """Focal loss ``-(1 - p_t)^gamma * log(p_t)`` (Lin et al. 2017), optionally class-weighted.

    ``alpha`` (binary only) weighs positives by alpha and negatives by 1 - alpha, as torchvision's
    ``sigmoid_focal_loss``; for multiclass use ``weight``. gamma=0 without weights equals cross entropy.
    """

    def __init__(self, gamma: float = 2.0, alpha: float | None = None, weight: WeightSpec = None) -> None:
        super().__init__(weight)
        self.gamma = gamma
        self.alpha = alpha

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if _is_binary(logits):
            logits = logits.reshape(-1)
            alpha = -1 if self.alpha is None else self.alpha
            loss = sigmoid_focal_loss(logits, target.float(), alpha=alpha, gamma=self.gamma, reduction="none")
            num_classes = 2
        else:
            log_p = F.log_softmax(logits, dim=1).gather(1, target.long().unsqueeze(1)).squeeze(1)
            loss = -((1 - log_p.exp()) ** self.gamma) * log_p
            num_classes = logits.shape[1]
        sample_weight = self._per_sample_weight(target, num_classes)
        if sample_weight is None:
            return loss.mean()
        return (loss * sample_weight).sum() / sample_weight.sum()


class SoftF1Loss(nn.Module):
    """``1 - macro F1`` computed from probabilities instead of hard predictions (differentiable).

    Per class c: ``tp = sum p_c * y_c``, ``fp = sum p_c * (1 - y_c)``, ``fn = sum (1 - p_c) * y_c``,
    ``F1_c = 2 tp / (2 tp + fp + fn + eps)``; binary logits are treated as two classes.
    """

    def __init__(self, eps: float = 1e-7) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if _is_binary(logits):
            p = torch.sigmoid(logits.reshape(-1))
            probs = torch.stack([1 - p, p], dim=1)
        else:
            probs = logits.softmax(dim=1)
        onehot = F.one_hot(target.long(), probs.shape[1]).float()
        tp = (probs * onehot).sum(0)
        fp = (probs * (1 - onehot)).sum(0)
        fn = ((1 - probs) * onehot).sum(0)
        f1 = 2 * tp / (2 * tp + fp + fn + self.eps)
        return 1 - f1.mean()


class CombinedLoss(nn.Module):
    """Weighted sum of named losses, e.g. ``{ce: CrossEntropyLoss, f1: SoftF1Loss}`` with weights."""

    def __init__(self, losses: dict[str, nn.Module], weights: dict[str, float] | None = None) -> None:
        super().__init__()
        self.losses = nn.ModuleDict(losses)
        weights = dict(weights or {})
        unknown = set(weights) - set(losses)
        if unknown:
            raise UserError(f"hyp.loss.weights: {sorted(unknown)} name no loss in hyp.loss.losses")
        self.weights = {name: float(weights.get(name, 1.0)) for name in losses}

    def set_class_counts(self, counts: Sequence[int]) -> None:
        for loss in self.losses.values():
            if hasattr(loss, "set_class_counts"):
                loss.set_class_counts(counts)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return sum(self.weights[name] * loss(logits, target) for name, loss in self.losses.items())
