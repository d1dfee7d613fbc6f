"""Entry-point helpers: turn user mistakes into one clear line and a non-zero exit code."""

from __future__ import annotations

import functools
import logging
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any

from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from pipeline.utils.config import CONFIG_DIR, register_resolvers, use_project_plugins
from pipeline.utils.console import quiet_third_party
from pipeline.utils.errors import UserError
from pipeline.utils.files import DISK_ERRORS, disk_error
from pipeline.utils.validation import RENAMED, validate_config

log = logging.getLogger(__name__)
USER_ERROR_EXIT = 2


def describe_error(exc: BaseException) -> str | None:
    """One line for a user-caused exception, or None for a genuine bug (which keeps its traceback)."""
    message = _describe(exc)
    moved = [f"{old} is now {new}" for old, new in RENAMED.items() if message and f"'{old}'" in message]
    return f"{message} ({'; '.join(moved)})" if moved else message


def _describe(exc: BaseException) -> str | None:
    cause: BaseException | None = exc
    while cause is not None:  # Hydra wraps errors raised inside instantiated constructors
        if isinstance(cause, UserError):
            return str(cause)
        cause = cause.__cause__
    cause, seen = exc, 0
    while cause is not None and seen < 16:  # a full or read-only disk, wherever written (Lightning re-raises)
        if isinstance(cause, OSError) and cause.errno in DISK_ERRORS:
            return str(disk_error(cause.filename or "a file of the run", cause))
        cause, seen = cause.__cause__ or cause.__context__, seen + 1
    if isinstance(exc, OmegaConfBaseException):
        key = getattr(exc, "full_key", None)
        message = str(exc).splitlines()[0]
        if "Missing mandatory value" in str(exc):
            return f"{key}: a required value is missing (set it on the command line: {key}=...)"
        return f"{key}: {message}" if key else message
    if isinstance(exc, HydraException):
        text = str(exc).split("Config search path")[0]
        return " ".join(line.strip() for line in text.splitlines() if line.strip())
    return None


def exit_on_user_error(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run ``fn``; a user mistake prints ``error: <one line>`` to stderr and exits with code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        sys.argv[1:] = quote_undecodable(sys.argv[1:])
        for stream in (sys.stdout, sys.stderr):  # a file name that is not UTF-8 prints with \x escapes
            if hasattr(stream, "reconfigure"):
                stream.reconfigure(errors="backslashreplace")
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - classified right below
            message = describe_error(exc)
            if message is None:
                raise
            log_to_files(message)
            print(f"error: {message}", file=sys.stderr)
            sys.exit(USER_ERROR_EXIT)

    return wrapper


def quote_undecodable(argv: list[str]) -> list[str]:
    """``key=value`` arguments whose value holds bytes that are not UTF-8 (a file name from another system, which
    Python keeps as surrogates) quoted for Hydra's override grammar, which refuses them unquoted."""
    out = []
    for arg in argv:
        key, eq, value = arg.partition("=")
        if eq and any("\udc80" <= ch <= "\udcff" for ch in value) and value[:1] not in ("'", '"'):
            arg = f"{key}='{value.replace(chr(39), chr(92) + chr(39))}'"
        out.append(arg)
    return out


def log_to_files(message: str) -> None:
    """Inside a run, keep an error in its train.log too; the console already shows it as ``error:``."""
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, message, None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


HYDRA_FLAGS = ("-m", "--multirun", "--help", "-h", "--hydra-help", "--cfg", "-c", "--info", "-i",
               "--resolve", "--package", "-p", "--run", "-r", "--shell-completion", "-sc",
               "--config-path", "-cp", "--version")
# Flags the pre-check follows as Hydra does: another primary config, an extra config folder.
CONFIG_FLAGS = {"--config-name": "name", "-cn": "name", "--config-dir": "dir", "-cd": "dir"}


def config_flags(argv: list[str]) -> tuple[list[str], dict[str, str]]:
    """``argv`` without ``--config-name``/``--config-dir`` (either ``-cd x`` or ``-cd=x``), and their values;
    the folder becomes a ``hydra.searchpath`` entry, which is what Hydra adds it as."""
    rest, found, args = [], {}, iter(argv)
    for arg in args:
        flag, eq, value = arg.partition("=")
        if flag in CONFIG_FLAGS:
            found[CONFIG_FLAGS[flag]] = value if eq else next(args, "")
        else:
            rest.append(arg)
    if "dir" in found:
        folder = os.path.abspath(found["dir"])
        if not os.path.isdir(folder):
            raise UserError(f"--config-dir: '{folder}' is not a folder (give the folder that holds your YAML files)")
        given = next((a for a in rest if a.startswith("hydra.searchpath=")), None)
        paths = [p.strip() for p in given.partition("=")[2].strip("[]").split(",") if p.strip()] if given else []
        rest = [a for a in rest if a is not given] + [f"hydra.searchpath=[{','.join([*paths, f'file://{folder}'])}]"]
    return rest, found


def check_composition(config_dir: str, config_name: str, argv: list[str]) -> None:
    """Compose the config once up front so a bad override fails with one line, not Hydra's report.

    Skipped when argv carries Hydra's own flags (multirun sweeps, --cfg, --help...), which
    Hydra handles itself.
    """
    if any(arg.split("=")[0] in HYDRA_FLAGS for arg in argv):
        return
    from hydra import compose, initialize_config_dir

    argv, flags = config_flags(argv)
    config_name = flags.get("name", config_name)

    with initialize_config_dir(config_dir=config_dir, version_base="1.3"):
        # Hydra's own settings are Hydra's to check, except the search path: it decides what composes.
        overrides = [a for a in argv if not a.startswith("hydra.") or a.startswith("hydra.searchpath=")]
        try:
            cfg = compose(config_name=config_name, overrides=overrides)
        except ValueError as exc:
            where = traceback.extract_tb(exc.__traceback__)[-1].filename.replace(os.sep, "/")
            if "/omegaconf/" in where:  # a key through a list, e.g. data.augment.crop (lists take indices)
                keys = [arg.split("=")[0].lstrip("+~") for arg in overrides if "=" in arg]
                named = next((key for key in keys if key in RENAMED), None)
                raise UserError(f"{f'{named!r}: ' if named else ''}a key under a list takes an index, e.g. "
                                f"data.augment.0.p=0.3 (command line: {' '.join(overrides)})") from None
            if "/hydra/" not in where:
                raise
            # Hydra's own check of an override's value, e.g. a group given null
            raise UserError(f"{exc} (command line: {' '.join(overrides)}); a config group takes an option name, "
                            "e.g. callbacks=default, or ~callbacks to drop it") from None
    missing = sorted(_missing_keys(cfg))
    if missing:
        raise UserError(f"{missing[0]}: a required value is missing (set it on the command line: {missing[0]}=...)")
    validate_config(cfg)


def run_hydra(config_name: str, fn: Callable[[Any], Any]) -> Any:
    """Run ``fn(cfg)`` as the Hydra app of ``configs/<config_name>.yaml`` on ``sys.argv``: ``--help``,
    ``--cfg job``, multirun; a bad override or a user mistake is one ``error:`` line and exit code 2."""
    import hydra

    use_project_plugins()
    register_resolvers()
    quiet_third_party()
    check_composition(str(CONFIG_DIR), config_name, sys.argv[1:])

    @exit_on_user_error
    def task(cfg: Any) -> Any:
        validate_config(cfg)  # again: a multirun's jobs each get their own values
        return fn(cfg)

    task.__module__ = config_name  # Hydra names the job (and --help's app) after the task function's module
    return hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name=config_name)(task)()


def _missing_keys(cfg, prefix: str = ""):
    # Not OmegaConf.missing_keys: it resolves interpolations, and ${hydra:...} fails before a run exists.
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(cfg, DictConfig):
        items = ((k, cfg._get_node(k)) for k in cfg.keys())
    elif isinstance(cfg, ListConfig):
        items = ((str(i), cfg._get_node(i)) for i in range(len(cfg)))
    else:
        return
    for key, node in items:
        full = f"{prefix}{key}"
        if OmegaConf.is_missing(cfg, key) if isinstance(cfg, DictConfig) else node._is_missing():
            yield full
        elif isinstance(node, DictConfig | ListConfig):
            yield from _missing_keys(node, f"{full}.")
