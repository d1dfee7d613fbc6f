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
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
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
    if isinstance(exc, ValueError):
        return _composition_value_error(exc)
    return None


def _composition_value_error(exc: ValueError) -> str | None:
    """A ValueError that Hydra's composition of the command line raised (a user's override), in one line; None
    for one raised anywhere else (a bug)."""
    frames = [frame.filename.replace(os.sep, "/") for frame in traceback.extract_tb(exc.__traceback__)]
    if not any(name.endswith("/hydra/_internal/config_loader_impl.py") for name in frames):
        return None
    overrides = [arg for arg in sys.argv[1:] if "=" in arg and not arg.startswith("-")]
    if "/omegaconf/" in frames[-1]:  # a key through a list, e.g. data.augment.crop (lists take indices)
        named = next((key for key in (arg.split("=")[0].lstrip("+~") for arg in overrides) if key in RENAMED), None)
        return (f"{f'{named!r}: ' if named else ''}a key under a list takes an index, e.g. data.augment.0.p=0.3 "
                f"(command line: {' '.join(overrides)})")
    # Hydra's own check of an override's value, e.g. a group given null
    return (f"{exc} (command line: {' '.join(overrides)}); a config group takes an option name, e.g. callbacks=default, "
            "or ~callbacks to drop it")


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
            exit_with(message)

    return wrapper


def exit_with(message: str) -> None:
    """``error: <message>`` on stderr (and in the run's log files), exit code 2."""
    log_to_files(message)
    print(f"error: {message}", file=sys.stderr)
    sys.exit(USER_ERROR_EXIT)


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


class CheckConfig(Callback):
    """Hydra callback (``hydra.callbacks.check_config`` in configs/hydra/): the composed config checked once, when
    a run starts and before its folder exists: a required value missing, a wrong value or a moved key is one line
    (``validate_config``). Multirun jobs, which each get their own values, are checked in the job."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        cfg = OmegaConf.masked_copy(config, [key for key in config if key != "hydra"])
        missing = sorted(_missing_keys(cfg))
        try:
            if missing:
                raise UserError(f"{missing[0]}: a required value is missing (set it on the command line: {missing[0]}=...)")
            validate_config(cfg)
        except UserError as exc:
            exit_with(str(exc))  # SystemExit: Hydra turns a callback's exceptions into warnings


def run_hydra(config_name: str, fn: Callable[[Any], Any]) -> Any:
    """Run ``fn(cfg)`` as the Hydra app of ``configs/<config_name>.yaml`` on ``sys.argv``: ``--help``,
    ``--cfg job``, multirun. Called within a command's ``exit_on_user_error``, which makes a bad override (Hydra's
    composition error, raised through) or a user mistake one ``error:`` line and exit code 2."""
    import hydra

    use_project_plugins()
    register_resolvers()
    quiet_third_party()
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra's composition errors reach exit_on_user_error: one line, exit code 2

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
