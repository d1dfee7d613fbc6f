"""Initialise a network from another network's tensors: timm, torchvision and safetensors state dicts,
and the Lightning checkpoints of this framework's runs.

Tensors are matched by name after removing the wrappers that differ between projects and tasks
(``model.``, ``module.``, ``net.``, ``backbone.``, ``body.``, ``encoder.``, ``_orig_mod.``), then by
shape: a classifier's ``net.backbone.layer1.0.conv1.weight``, a detector's
``net.backbone.body.layer1.0.conv1.weight`` and torchvision's ``layer1.0.conv1.weight`` are one name.
A name found with another shape is skipped (a head for another number of classes), never loaded.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from pipeline.utils.errors import UserError

log = logging.getLogger(__name__)

KNOWN_PREFIXES = ("_orig_mod.", "module.", "model.", "net.", "backbone.", "body.", "encoder.")
# Where timm's, torchvision's and other trainers' checkpoint files keep the weights.
NESTED_KEYS = ("state_dict", "model", "state_dict_ema", "model_state_dict", "module")


def read_state_dict(path: Path) -> tuple[dict[str, Tensor], str]:
    """The tensors of a weights file and what it is (``lightning checkpoint of <task>``, ``safetensors``,
    ``state dict``); a Lightning checkpoint gives its network's tensors only (not its loss or metrics)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path)), "safetensors"
        except Exception as exc:  # safetensors raises its own SafetensorError for any bad file
            raise UserError(f"model.init_from: cannot read '{path}' as safetensors ({exc})") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling, zip and EOF errors all mean the same to the user
        first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise UserError(f"model.init_from: cannot read '{path}' as a torch weights file ({first})") from None
    kind = "state dict"
    if isinstance(state, Mapping) and "state_dict" in state and "hyper_parameters" in state:
        task = state["hyper_parameters"].get("data_info", {}).get("task", "a run")
        tensors = {k: v for k, v in state["state_dict"].items() if k.startswith("net.")}
        return tensors, f"lightning checkpoint of {task}"
    while isinstance(state, Mapping):
        nested = next((state[key] for key in NESTED_KEYS if isinstance(state.get(key), Mapping)), None)
        if nested is None:
            break
        state, kind = nested, "checkpoint"
    tensors = {k: v for k, v in state.items() if isinstance(v, Tensor)} if isinstance(state, Mapping) else {}
    if not tensors:
        raise UserError(f"model.init_from: '{path}' holds no named tensors (give a state dict, a timm or "
                        "torchvision weights file, a .safetensors file or a run folder)")
    return tensors, kind


def normalise(key: str, prefix: str | None = None, key_map: Mapping[str, str] | None = None) -> str | None:
    """The comparable name of a tensor: ``key_map`` renames applied, ``prefix`` required and removed (None
    when absent), then the known wrapper prefixes removed."""
    for old, new in (key_map or {}).items():
        if key.startswith(old):
            key = new + key[len(old):]
            break
    if prefix:
        if not key.startswith(prefix):
            return None
        key = key[len(prefix):]
    stripped = True
    while stripped:
        stripped = False
        for known in KNOWN_PREFIXES:
            if key.startswith(known):
                key, stripped = key[len(known):], True
    return key


@dataclass
class InitReport:
    """What an initialisation loaded, per part of the network (``backbone``, then the first name of the rest)."""

    source: str
    kind: str
    loaded: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    missing: dict[str, int] = field(default_factory=dict)
    unexpected: int = 0
    skipped_examples: list[str] = field(default_factory=list)

    def totals(self) -> dict[str, int]:
        return {"loaded": sum(self.loaded.values()), "skipped": sum(self.skipped.values()),
                "missing": sum(self.missing.values()), "unexpected": self.unexpected}

    def to_dict(self) -> dict[str, Any]:
        parts = sorted(set(self.loaded) | set(self.skipped) | set(self.missing))
        return {"source": self.source, "kind": self.kind, **self.totals(),
                "parts": {p: {"loaded": self.loaded.get(p, 0), "skipped": self.skipped.get(p, 0),
                              "missing": self.missing.get(p, 0)} for p in parts}}

    def table(self) -> str:
        """One text table: tensors loaded, skipped (shape mismatch), missing per part, and the unexpected count."""
        totals = self.totals()
        lines = [f"model.init_from {self.source} ({self.kind}): {totals['loaded']} tensors loaded, {totals['skipped']} "
                 f"skipped (shape mismatch), {totals['missing']} missing, {totals['unexpected']} unexpected (unused)",
                 f"  {'part':<16}{'loaded':>8}{'skipped':>9}{'missing':>9}"]
        for part, counts in self.to_dict()["parts"].items():
            lines.append(f"  {part:<16}{counts['loaded']:>8}{counts['skipped']:>9}{counts['missing']:>9}")
        lines += [f"  skipped: {example}" for example in self.skipped_examples]
        return "\n".join(lines)


def part_of(key: str, backbone_prefix: str | None) -> str:
    """The part a network tensor belongs to: ``backbone``, or the first name after the known prefixes."""
    if backbone_prefix and key.startswith(backbone_prefix):
        return "backbone"
    name = normalise(key) or key
    return name.split(".")[0] if "." in name else "(top)"


def load_matching(
    net: nn.Module,
    state: Mapping[str, Tensor],
    source: str,
    kind: str = "state dict",
    backbone_prefix: str | None = None,
    prefix: str | None = None,
    key_map: Mapping[str, str] | None = None,
) -> InitReport:
    """Copy into ``net`` every tensor of ``state`` whose comparable name and shape match one of ``net``'s;
    UserError when none does (a file for another architecture, or a wrong ``prefix``)."""
    by_name: dict[str, Tensor] = {}
    for key, tensor in state.items():
        name = normalise(key, prefix, key_map)
        if name is not None:
            by_name.setdefault(name, tensor)
    report = InitReport(source, kind)
    used: set[str] = set()
    matched: dict[str, Tensor] = {}
    target = net.state_dict()
    for key, tensor in target.items():
        part, name = part_of(key, backbone_prefix), normalise(key)
        found = by_name.get(name)
        if found is None:
            report.missing[part] = report.missing.get(part, 0) + 1
            continue
        used.add(name)
        if found.shape != tensor.shape:
            report.skipped[part] = report.skipped.get(part, 0) + 1
            if len(report.skipped_examples) < 5:
                report.skipped_examples.append(f"{key} {tuple(tensor.shape)} <- {tuple(found.shape)}")
            continue
        report.loaded[part] = report.loaded.get(part, 0) + 1
        matched[key] = found.to(dtype=tensor.dtype)
    report.unexpected = len(set(by_name) - used)
    if not matched:
        example = next(iter(state), "")
        own = next(iter(target), "")
        hint = f"; with model.init_prefix={prefix} no name remained" if prefix and not by_name else ""
        raise UserError(f"model.init_from: '{source}' matches no tensor of this network by name and shape ({len(state)} "
                        f"tensors, e.g. '{example}'; this network has e.g. '{own}'{hint}); give weights of the same "
                        "architecture, or set model.init_prefix / model.init_key_map")
    net.load_state_dict(matched, strict=False)
    return report


def backbone_prefix(net: nn.Module) -> str | None:
    """The state-dict prefix of a task network's backbone (``backbone.body.``, ``backbone.``, ``encoder.``)."""
    for name in ("backbone.body", "backbone", "encoder"):
        try:
            net.get_submodule(name)
        except AttributeError:
            continue
        return f"{name}."
    return None


def backbone_module(net: nn.Module) -> nn.Module:
    """A task network's pretrained-able part (``backbone.body``, ``backbone`` or ``encoder``), for freezing and
    ``hyp.backbone_lr_mult``."""
    prefix = backbone_prefix(net)
    if prefix is None:
        raise UserError(f"hyp.freeze_backbone_epochs / hyp.backbone_lr_mult: the network ({type(net).__name__}) has no "
                        "backbone part; leave them at 0 and 1.0")
    return net.get_submodule(prefix.rstrip("."))
