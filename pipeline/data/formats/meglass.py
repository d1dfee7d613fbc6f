"""Reader for MeGlass-style label lists: one ``<relative image path> <0|1>`` per line."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.utils.errors import UserError, require_path
from pipeline.utils.files import read_text

CLASS_NAMES = ("no_glasses", "glasses")
LABELS = {"0": 0, "1": 1}


@dataclass(frozen=True)
class MeGlassRecord:
    """One labelled image: absolute-ish path and 0 (no glasses) or 1 (glasses on the eyes)."""

    path: Path
    label: int


def _parse_line(line: str, list_file: Path, line_number: int, image_root: Path) -> MeGlassRecord | None:
    """Record for one list line, None for blank and comment lines; UserError on anything else."""
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    fields = text.rsplit(maxsplit=1)
    where = f"{list_file}:{line_number}"
    if len(fields) != 2:
        raise UserError(f"{where}: expected '<image path> <0|1>', got '{text}'")
    relative, label_text = fields
    if label_text not in LABELS:
        raise UserError(f"{where}: label must be 0 (no glasses) or 1 (glasses), got '{label_text}'")
    # Lists written on Windows may use backslashes.
    path = image_root / relative.strip().replace("\\", "/")
    if not path.is_file():
        raise UserError(f"{where}: image '{path}' does not exist (fix the line or set the image root)")
    return MeGlassRecord(path=path, label=LABELS[label_text])


def read_meglass(
    list_file: str | Path, image_root: str | Path | None = None
) -> tuple[list[MeGlassRecord], list[str]]:
    """Read a MeGlass list into records and the class names ``["no_glasses", "glasses"]``.

    Lines are ``<path> <label>`` separated by any whitespace (the path may itself hold spaces: the
    label is the last field). Blank lines, ``#`` comments, CRLF endings, a UTF-8 BOM and trailing
    spaces are tolerated. Paths are relative to ``image_root``, by default the list file's folder.
    A missing image, a label other than 0/1 or a malformed line raises UserError naming file and line.
    """
    list_file = require_path(list_file, "list_file", "MeGlass list file")
    root = require_path(image_root, "image_root", "folder") if image_root is not None else list_file.parent
    try:
        lines = read_text(list_file).splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{list_file}: cannot read MeGlass list ({exc})") from None
    records = [
        record
        for number, line in enumerate(lines, start=1)
        if (record := _parse_line(line, list_file, number, root)) is not None
    ]
    if not records:
        raise UserError(f"{list_file}: no '<image path> <0|1>' lines found (is this the MeGlass list?)")
    return records, list(CLASS_NAMES)
