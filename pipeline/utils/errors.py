"""User-facing errors: one clear line, no traceback wall."""

from __future__ import annotations


class UserError(Exception):
    """A mistake in the user's input (config key, path, data file) with a one-line explanation.

    The entry points in ``bin/`` catch it, print ``error: <message>`` and exit with code 2.
    The message should name the offending file or config key and say how to fix it.
    """


def require_path(path, key: str, kind: str = "path"):
    """Return ``Path(path)`` if it exists, else raise UserError naming the config key."""
    from pathlib import Path

    p = Path(path).expanduser()
    if not p.exists():
        raise UserError(f"{key}: {kind} '{p}' does not exist (set {key}=<existing {kind}>)")
    if kind.endswith("folder") and not p.is_dir():
        raise UserError(f"{key}: '{p}' is a file, not a {kind} (set {key}=<existing {kind}>)")
    return p


def printable(text: str) -> str:
    """``text`` with the bytes of a name that is not UTF-8 (kept by Python as surrogates) shown as ``\\xNN``: for
    plots and messages, which cannot draw or encode the surrogates themselves."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
