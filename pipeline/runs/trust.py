"""What a run folder may make this program build.

A run folder is data: a shared model or a downloaded run may hold any config. Before anything of a saved
config is instantiated, every ``_target_`` in it must be a class of this project's own packages or of the
named libraries; functions (``os.system``, ``builtins.exec``...) and the
library corners that load code or write files given a string are refused. A library class (not one of this
project's) gets no string argument that names a path out of the run folder: absolute, ``~`` or climbing out
with ``..`` (``outside_paths``); a relative one is checked as if taken from the run folder. ``trust_run=true`` on the command
line trusts a folder; the folder's own config cannot say so (``load_run_config`` resets the key).
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
from collections.abc import Iterator
from pathlib import Path

from hydra._internal.utils import _locate
from omegaconf import DictConfig, ListConfig, OmegaConf

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


def _library_nodes(node: object, path: str) -> Iterator[tuple[str, DictConfig]]:
    """(key path, node) of every node whose ``_target_`` is a class of a library, not of this project."""
    for full, key, value in _nodes(node, path):
        if key == "_target_" and isinstance(value, str) and not _project_package(value):
            parent = full.rpartition(".")[0]
            yield parent, (OmegaConf.select(node, parent) if parent else node)


def _strings(cfg: DictConfig, node: object, path: str) -> Iterator[tuple[str, str]]:
    """(key path, value) of the string arguments of a node, resolved where they resolve (``${paths.output_dir}/x``
    is the run's folder); nested targets are skipped: they are checked as nodes of their own."""
    children = list(_nodes(node, path))
    own_target = f"{path}._target_" if path else "_target_"
    nested = {full.rpartition(".")[0] for full, key, _ in children if key == "_target_" and full != own_target}
    for full, key, value in children:
        if key == "_target_" or not isinstance(value, str) or any(full.startswith(f"{n}.") for n in nested):
            continue
        resolved = OmegaConf.select(cfg, full, throw_on_resolution_failure=False)
        yield full, resolved if isinstance(resolved, str) else value


def outside_paths(run_dir: Path, cfg: DictConfig) -> Iterator[tuple[str, str]]:
    """(key path, value) of every string argument of a library class that names a path out of ``run_dir``."""
    root = Path(run_dir).resolve()
    for node_path, node in _library_nodes(cfg, ""):
        for full, value in _strings(cfg, node, node_path):
            if not ("/" in value or "\\" in value or value.startswith("~") or ".." in value):
                continue  # a plain word (a metric name, a mode): no folder of its own
            try:
                resolved = (root / Path(value).expanduser()).resolve()
            except (OSError, ValueError, RuntimeError):
                yield full, value
                continue
            if not resolved.is_relative_to(root):
                yield full, value


def check_run_config(run_dir: Path, cfg: DictConfig) -> None:
    """UserError naming the first target of a run folder's config that is not built, or the first path argument of a
    library class that leads out of the run, unless ``cfg.trust_run``."""
    if cfg.get("trust_run"):
        return
    for path, target, reason in refused_targets(cfg):
        raise UserError(f"{path}: '{target}' in run folder '{run_dir}' is not built ({reason}); "
                        "trust_run=true trusts the folder (only for runs you made or trust)")
    for path, value in outside_paths(run_dir, cfg):
        raise UserError(f"{path}: '{value}' in run folder '{run_dir}' is a path outside the run, which a library class "
                        "from a run folder is not given; trust_run=true trusts the folder (only for runs you made or trust)")
