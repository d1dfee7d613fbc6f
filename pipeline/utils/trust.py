"""What a run folder may make this program build.

A run folder is data: a shared model or a downloaded run may hold any config. Before anything of a saved
config is instantiated, every ``_target_`` in it must be a class of this project's own packages or of the
named libraries; functions (``os.system``, ``builtins.exec``...) and the
library corners that load code or write files given a string are refused. ``trust_run=true`` on the command
line trusts a folder; the folder's own config cannot say so (``load_run_config`` resets the key).
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
from collections.abc import Iterator
from pathlib import Path

from hydra._internal.utils import _locate
from omegaconf import DictConfig, ListConfig

from pipeline.utils.config import PROJECT_ROOT
from pipeline.utils.errors import UserError

LIBRARIES = ("torch", "torchvision", "timm", "lightning", "albumentations")
DENIED = ("torch.hub", "torch.jit", "torch.package", "torch.serialization", "torch.utils.cpp_extension", "torch.library",
          "torch.distributed", "torch.multiprocessing", "torch._", "torchvision.io", "torchvision.datasets",
          "lightning.pytorch.cli", "lightning.fabric.cli")


def _in_project(path: str | None) -> bool:
    """Whether a file or folder lies in this project's tree, outside virtualenvs and installed packages."""
    if not path:
        return False
    resolved = Path(path).resolve()
    return resolved.is_relative_to(PROJECT_ROOT) and not any(
        part.startswith(".") or part in ("site-packages", "dist-packages") for part in resolved.relative_to(PROJECT_ROOT).parts)


def _project_package(name: str) -> bool:
    """Whether the top-level package of ``name`` is one of this project's (found without importing it)."""
    spec = importlib.util.find_spec(name.split(".")[0])
    return spec is not None and any(_in_project(folder) for folder in spec.submodule_search_locations or ())


def _allowed_class(obj: object, libraries: tuple[str, ...]) -> bool:
    module = getattr(obj, "__module__", None) or ""
    if not inspect.isclass(obj) or any(module == d or module.startswith(d if d.endswith("_") else f"{d}.") for d in DENIED):
        return False
    return module.split(".")[0] in libraries or _in_project(getattr(sys.modules.get(module), "__file__", None))


def target_problem(target: object, libraries: tuple[str, ...] = LIBRARIES) -> str | None:
    """Why a run folder may not name ``target``; None when it may (a class of the project or of ``libraries``)."""
    if not isinstance(target, str) or "${" in target:
        return "not a plain class path"
    if target.split(".")[0] not in libraries and not _project_package(target):
        return f"not of this project nor of {', '.join(libraries)}"
    try:
        obj = _locate(target)  # imports modules of the project or of the libraries only
    except Exception:  # noqa: BLE001 - an unknown class fails later, at instantiation, with its own message
        return None
    return None if _allowed_class(obj, libraries) else "not a class, or one that loads code"


def _nodes(node: object, path: str) -> Iterator[tuple[str, str, object]]:
    """(key path, key, raw value) of every entry under ``node``, interpolations left unresolved."""
    if isinstance(node, DictConfig):
        items = ((str(k), node._get_node(k)) for k in node.keys())
    elif isinstance(node, ListConfig):
        items = ((str(i), node._get_node(i)) for i in range(len(node)))
    else:
        return
    for key, child in items:
        full = f"{path}.{key}" if path else key
        value = child._value() if not isinstance(child, DictConfig | ListConfig) else child
        yield full, key, value
        yield from _nodes(value, full)


def refused_targets(cfg: DictConfig) -> Iterator[tuple[str, str, str]]:
    """(key path, target, reason) of every ``_target_`` in ``cfg`` that a run folder may not name."""
    for path, key, value in _nodes(cfg, ""):
        if key == "_target_" and (reason := target_problem(value)):
            yield path, str(value), reason


def check_run_config(run_dir: Path, cfg: DictConfig) -> None:
    """UserError naming the first target of a run folder's config that is not built unless ``cfg.trust_run``."""
    if cfg.get("trust_run"):
        return
    for path, target, reason in refused_targets(cfg):
        raise UserError(f"{path}: '{target}' in run folder '{run_dir}' is not built ({reason}); "
                        "trust_run=true trusts the folder (only for runs you made or trust)")
