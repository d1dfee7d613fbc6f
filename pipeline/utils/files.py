"""Files the framework reads from and writes into a run folder.

Writes: written aside, then renamed, so no reader ever sees half a file; never through a symbolic link that
leads out of the run (``refuse_links_out``, ``contained``), and a full or read-only disk is one line naming the
path and the free space (``replacing``).

Reads of what a run folder holds (it is data: it may come from anyone): ``read_text`` (UTF-8, or one line
naming the file and what it holds instead), ``read_yaml`` (plain YAML: no custom tags, a cap on size and on
what aliases expand to) and ``read_json`` (a cap on size and depth).
"""

from __future__ import annotations

import codecs
import csv
import errno
import io
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from pipeline.runs.layout import RunLayout
from pipeline.utils.errors import UserError

MAX_TEXT_BYTES = 64 * 2**20  # a saved config, history or label file larger than this is not one the framework wrote
MAX_YAML_NODES = 1_000_000  # nodes that the aliases of one YAML file may expand to (a 10-way, 9-deep bomb: 10^9)
MAX_JSON_DEPTH = 64
# A write that fails with these is the disk's or the folder's doing, not a bug: one line naming the path.
DISK_ERRORS = {errno.ENOSPC: "no space left", errno.EDQUOT: "disk quota exceeded", errno.EROFS: "read-only file system",
               errno.EACCES: "permission denied", errno.EPERM: "not permitted", errno.EFBIG: "file too large"}
NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


# ---- run folders: no write leaves them ----------------------------------------------------------------------------

def links_out(root: str | Path) -> Iterator[tuple[Path, Path]]:
    """(link, where it leads) for every symbolic link under ``root`` that leads out of it (or nowhere outside)."""
    real_root = Path(root).resolve()
    for folder, folders, files in os.walk(real_root):  # followlinks=False: a linked folder is listed, not entered
        for name in folders + files:
            entry = Path(folder) / name
            if entry.is_symlink():
                target = entry.resolve()
                if not target.is_relative_to(real_root):
                    yield entry, target


def refuse_links_out(run_dir: str | Path) -> None:
    """UserError naming the first symbolic link of a run folder that leads out of it: nothing of the run is
    written (the lock, a checkpoint, a log, predictions) until it is gone."""
    for link, target in links_out(run_dir):
        raise UserError(f"run folder '{run_dir}': '{link.relative_to(Path(run_dir).resolve())}' is a symbolic link to "
                        f"'{target}', outside the run, and nothing is written through it (remove the link, or copy "
                        "the run with `cp -rL`)")


def contained(path: str | Path, root: str | Path) -> Path:
    """``path`` when the folder it would be written in, links resolved, lies in ``root``; else UserError."""
    path, real_root = Path(path), Path(root).resolve()
    folder = path.parent.resolve()
    if not folder.is_relative_to(real_root):
        raise UserError(f"{path}: its folder leads to '{folder}', outside the run '{root}' (a symbolic link?); "
                        "nothing is written through it")
    return path


def _run_root(path: Path) -> Path | None:
    """The run folder ``path`` lies in, when it does (the nearest parent holding ``.hydra/config.yaml``)."""
    for parent in Path(os.path.abspath(path)).parents:
        if RunLayout(parent).is_run():
            return parent
    return None


def free_space(path: str | Path) -> str:
    """The free space on the disk of ``path`` (or of its nearest existing parent), e.g. ``'1.2 GB free'``."""
    probe = Path(os.path.abspath(path))
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        return f"{_size(shutil.disk_usage(probe).free)} free"
    except OSError:
        return "free space unknown"


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return ""


def disk_error(path: str | Path, exc: OSError, needed: int | None = None) -> UserError:
    """One line for a write that the disk refused: the path, the reason, the space needed (when known) and free."""
    need = f"about {_size(needed)} needed, " if needed else ""
    return UserError(f"{path}: cannot be written: {DISK_ERRORS.get(exc.errno, exc.strerror)} ({need}{free_space(path)}); "
                     "free some space or write elsewhere (paths.results_dir=..., out=...); files written before are kept")


@contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """A temporary path next to ``path`` to write to; it replaces ``path`` only if the block ends without error.

    Same folder, so ``os.replace`` is an atomic rename: a crash or kill leaves the old file or the new one. In a run
    folder the folder written to must lie in the run, links resolved (``contained``); ``os.replace`` replaces a link
    at ``path`` itself, never its target. A full or read-only disk is a UserError naming the path (``disk_error``).
    """
    path = Path(path)
    root = _run_root(path)
    if root is not None:
        contained(path, root)
    staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except FileExistsError as exc:  # a file, or a link to nothing, where a folder must be
            what = "a broken symbolic link" if os.path.islink(exc.filename) else "a file"
            raise UserError(f"{exc.filename}: {what} where the folder of {path} is written; remove or rename it") from None
        staging.unlink(missing_ok=True)  # a link planted under the staging name is removed, not written through
        yield staging
        os.replace(staging, path)
    except OSError as exc:
        if exc.errno not in DISK_ERRORS:
            raise
        previous = path.stat().st_size if path.is_file() else None
        raise disk_error(path, exc, previous) from exc
    finally:
        staging.unlink(missing_ok=True)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (file names that are not UTF-8 kept as their bytes)."""
    with replacing(path) as staging:
        staging.write_text(text, encoding="utf-8", errors="surrogateescape")


def write_json(path: str | Path, payload: Any, indent: int = 2) -> None:
    """Write ``payload`` as JSON to ``path`` atomically."""
    atomic_write_text(path, json.dumps(payload, indent=indent))


def write_csv(path: str | Path, header: list[str], rows: list[list[Any]]) -> Path:
    """A header and rows to a CSV file (its folder made if needed), atomically; returns the path."""
    path = Path(path)
    with replacing(path) as staging, open(staging, "w", newline="", encoding="utf-8", errors="surrogateescape") as fh:
        csv.writer(fh).writerows([header, *rows])
    return path


def open_no_follow(path: str | Path, flags: int, mode: int = 0o644) -> int:
    """``os.open`` that refuses a symbolic link at ``path`` (O_NOFOLLOW where the OS has it) with one line."""
    path = Path(path)
    if path.is_symlink():
        raise UserError(f"{path}: is a symbolic link (to '{path.resolve()}'); nothing is written through it "
                        "(remove the link)")
    try:
        return os.open(path, flags | NOFOLLOW, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UserError(f"{path}: is a symbolic link; nothing is written through it (remove the link)") from None
        if exc.errno in DISK_ERRORS:
            raise disk_error(path, exc) from None
        raise


# ---- bounded reads --------------------------------------------------------------------------------------------------

BOMS = ((codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"), (codecs.BOM_UTF16_LE, "UTF-16"),
        (codecs.BOM_UTF16_BE, "UTF-16"))


def read_text(path: str | Path, limit: int = MAX_TEXT_BYTES) -> str:
    """A text file as UTF-8 (a UTF-8 byte-order mark dropped); UserError naming the file and what it holds instead
    (UTF-16/32 by its byte-order mark, else the first byte that is not UTF-8) or when it exceeds ``limit`` bytes."""
    path = Path(path)
    with open(path, "rb") as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise UserError(f"{path}: larger than {_size(limit)}, more than a text file of this kind holds")
    for bom, name in BOMS:
        if data.startswith(bom):
            raise UserError(f"{path}: the file is {name} text, not UTF-8 (save it as UTF-8)")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        guess = "Latin-1/Windows-1252 text?" if _single_byte(data) else "binary data?"
        raise UserError(f"{path}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}; "
                        f"{guess}); save it as UTF-8") from None


def _single_byte(data: bytes) -> bool:
    """Whether undecodable bytes look like a single-byte text encoding (no NUL, few control characters)."""
    return b"\0" not in data[:4096]


def text_stream(path: str | Path) -> io.StringIO:
    """``read_text`` as a file object for ``csv`` readers (newlines kept as written)."""
    return io.StringIO(read_text(path), newline="")


class _BoundedLoader(yaml.SafeLoader):
    """OmegaConf's YAML loader (SafeLoader: no tags beyond YAML's own) that counts what aliases expand to."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.expanded = 0
        self.sizes: dict[int, int] = {}

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            node = self.anchors.get(self.peek_event().anchor)
            if node is not None:
                self.expanded += _node_count(node, self.sizes)
                if self.expanded > MAX_YAML_NODES:
                    raise _TooLarge()
        return super().compose_node(parent, index)


class _TooLarge(Exception):
    pass


def _node_count(node: yaml.Node, sizes: dict[int, int]) -> int:
    """Nodes under ``node`` once every alias is expanded (memoised per node)."""
    if id(node) in sizes:
        return sizes[id(node)]
    if isinstance(node, yaml.SequenceNode):
        count = 1 + sum(_node_count(child, sizes) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        count = 1 + sum(_node_count(k, sizes) + _node_count(v, sizes) for k, v in node.value)
    else:
        count = 1
    sizes[id(node)] = count
    return count


def _omegaconf_loader() -> type:
    from omegaconf._utils import get_yaml_loader

    base = get_yaml_loader()  # YAML 1.2 floats (1e-3) and a refusal of duplicate keys, as OmegaConf.load
    return type("BoundedOmegaConfLoader", (_BoundedLoader, base), {})


def read_yaml(path: str | Path) -> Any:
    """A YAML file as plain data (dicts, lists, scalars); UserError naming the file for a custom tag
    (``!!python/...``), aliases expanding past ``MAX_YAML_NODES``, nesting too deep or a syntax error."""
    path = Path(path)
    text = read_text(path)
    loader = None
    try:
        loader = _omegaconf_loader()(text)  # its reader refuses control characters (NUL...) at once
        data = loader.get_single_data()
    except _TooLarge:
        raise UserError(f"{path}: its aliases (&/*) expand to more than {MAX_YAML_NODES:,} values; "
                        "not a config this program wrote (a YAML bomb?)") from None
    except RecursionError:
        raise UserError(f"{path}: nested too deeply to be a config") from None
    except yaml.constructor.ConstructorError as exc:
        raise UserError(f"{path}: {exc.problem} (only plain YAML is read: no tags such as !!python/...)") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())  # one line: the reader's is two
        raise UserError(f"{path}{where}: not valid YAML ({problem})") from None
    finally:
        if loader is not None:
            loader.dispose()
    if not json_depth_ok(data, MAX_JSON_DEPTH):  # an alias that holds itself (a: &x [*x]) nests without end
        raise UserError(f"{path}: nested too deeply to be a config (or an alias that holds itself)")
    return data


def read_config(path: str | Path) -> Any:
    """A saved config file (``.hydra/*.yaml``) as an OmegaConf mapping, read with ``read_yaml``."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    data = read_yaml(path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: holds a {type(data).__name__}, not a config (a mapping of keys)")
    try:
        return OmegaConf.create(data)
    except OmegaConfBaseException as exc:
        raise UserError(f"{path}: not a config ({str(exc).splitlines()[0]})") from None


def json_depth_ok(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether ``value`` nests no deeper than ``limit`` (checked without recursion)."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return False
        if isinstance(node, dict):
            stack.extend((child, depth + 1) for child in node.values())
        elif isinstance(node, list):
            stack.extend((child, depth + 1) for child in node)
    return True


def read_json(path: str | Path, default: Any = None) -> Any:
    """The JSON in ``path``, or ``default`` when the file is missing, half-written, not UTF-8, larger than
    ``MAX_TEXT_BYTES``, nested deeper than ``MAX_JSON_DEPTH``, or of another kind than ``default`` (a list or
    ``null`` where a ``{}`` default says an object is read)."""
    try:
        value = json.loads(read_text(path))
    except (OSError, ValueError, RecursionError, UserError):
        return default
    if default is not None and not isinstance(value, type(default)):
        return default
    return value if json_depth_ok(value) else default



def __getattr__(name: str) -> Any:
    """Run folders saved before the checkpoint writer moved name it ``pipeline.utils.files.AtomicCheckpointIO`` in
    their ``trainer.plugins``: found here on demand, so those runs still resume (importing it at the top would
    load torch and Lightning for every command that only reads files, such as ``bin/runs.py``)."""
    if name == "AtomicCheckpointIO":
        from pipeline.callbacks.model_selection import AtomicCheckpointIO

        return AtomicCheckpointIO
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
