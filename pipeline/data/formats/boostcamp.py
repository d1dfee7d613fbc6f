"""Reader for the Naver boostcamp mask / gender / age dataset (18 classes).

On-disk layout (``root`` is the folder holding ``train/`` and ``eval/``)::

    train/train.csv                      id,gender,race,age,path   (path = person folder name)
    train/images/<id>_<gender>_<race>_<age>/
        mask1 .. mask5, incorrect_mask, normal   (.jpg .jpeg .png ..., any case)
    eval/info.csv                        ImageID[,ans]
    eval/images/<ImageID>

``train.csv`` is the index of people: folders it does not list are ignored, as are dot-files
(``.DS_Store``, ``._mask1.jpg``) and non-image files inside a person folder.

Labels, defined here and nowhere else:

- mask: ``mask1``..``mask5`` = 0 (wear), ``incorrect_mask`` = 1, ``normal`` = 2
- gender: male = 0, female = 1
- age group: age < 30 = 0, 30..59 = 1, >= 60 = 2
- class = mask * 6 + gender * 3 + age_group  (``encode_class`` / ``decode_class``)

Label corrections are a YAML file applied while reading; files on disk are never renamed or
edited. Person ids are the ``id`` column of ``train.csv`` exactly as written there (keep the
zero padding; every value is read as a string, so quoting is optional)::

    gender:                # person id -> corrected gender (male | female)
      "000020": female
    age:                   # person id -> corrected age in years
      "001234": 61
    swap_mask_normal:      # people whose incorrect_mask and normal images are swapped
      - "000645"

All three keys are optional. An unknown key, an id not in ``train.csv``, an unknown gender or
a non-integer age is a UserError naming the corrections file.

Corrupt images are found when decoded: ``image_folder.drop_unreadable(records)`` decodes each
file up front (UserError naming the first bad one, or drop-and-count with ``skip_bad_files``).
The real ``eval/info.csv`` ships ``ans`` as a placeholder 0 for every row, so its ``label`` is
only meaningful for eval sets that carry true answers (such as the synthetic one).
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import yaml

from pipeline.data.formats.image_folder import csv_rows
from pipeline.data.io import is_image_file
from pipeline.utils.errors import UserError, require_path
from pipeline.utils.files import read_text

log = logging.getLogger(__name__)

MASK_NAMES = ("wear", "incorrect", "not_wear")
GENDER_NAMES = ("male", "female")
AGE_NAMES = ("<30", "30-59", ">=60")
CLASS_NAMES = tuple(
    f"{mask}/{gender}/{age}" for mask in MASK_NAMES for gender in GENDER_NAMES for age in AGE_NAMES
)
MASK_FILE_LABELS = {
    "mask1": 0,
    "mask2": 0,
    "mask3": 0,
    "mask4": 0,
    "mask5": 0,
    "incorrect_mask": 1,
    "normal": 2,
}
SWAPPED_MASK = {0: 0, 1: 2, 2: 1}
TRAIN_CSV_COLUMNS = ("id", "gender", "race", "age", "path")
CORRECTION_KEYS = ("gender", "age", "swap_mask_normal")


def age_group(age: int) -> int:
    """Age group index: < 30 -> 0, 30..59 -> 1, >= 60 -> 2."""
    if age < 30:
        return 0
    return 1 if age < 60 else 2


def encode_class(mask: int, gender: int, age_group: int) -> int:
    """18-way class index from the three attribute indices."""
    return mask * 6 + gender * 3 + age_group


def decode_class(class_id: int) -> tuple[int, int, int]:
    """(mask, gender, age_group) from an 18-way class index."""
    if not 0 <= class_id < len(CLASS_NAMES):
        raise ValueError(f"class id {class_id} outside 0..{len(CLASS_NAMES) - 1}")
    return class_id // 6, (class_id // 3) % 2, class_id % 3


@dataclass(frozen=True)
class BoostcampRecord:
    """One training image with its person and labels."""

    path: Path
    person_id: str
    mask: int
    gender: int
    age_group: int
    class_id: int
    age: int


@dataclass(frozen=True)
class BoostcampEvalRecord:
    """One eval image; ``label`` is the ``ans`` column when it is filled, else None."""

    path: Path
    image_id: str
    label: int | None


@dataclass(frozen=True)
class LabelCorrections:
    """Per-person label fixes applied at read time (see the module docstring for the YAML)."""

    gender: dict[str, int] = field(default_factory=dict)
    age: dict[str, int] = field(default_factory=dict)
    swap_mask_normal: frozenset[str] = frozenset()
    source: str = "<label corrections>"

    def person_ids(self) -> set[str]:
        """Every person id the corrections mention."""
        return set(self.gender) | set(self.age) | set(self.swap_mask_normal)


def _parse_gender(value: str, where: str) -> int:
    """Gender index of a 'male'/'female' string (any case); UserError naming ``where`` otherwise."""
    name = value.strip().lower()
    if name not in GENDER_NAMES:
        raise UserError(f"{where}: unknown gender '{value}' (expected one of {', '.join(GENDER_NAMES)})")
    return GENDER_NAMES.index(name)


def _parse_age(value: str, where: str) -> int:
    try:
        return int(value.strip())
    except ValueError:
        raise UserError(f"{where}: age '{value}' is not a whole number of years") from None


def load_label_corrections(path: str | Path) -> LabelCorrections:
    """Read and validate a label-corrections YAML file."""
    path = require_path(path, "label_corrections", kind="file")
    try:
        # BaseLoader keeps every scalar a string, so ids like 000020 keep their zero padding.
        data = yaml.load(read_text(path), Loader=yaml.BaseLoader) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping with keys {', '.join(CORRECTION_KEYS)}")
    unknown = sorted(set(data) - set(CORRECTION_KEYS))
    if unknown:
        raise UserError(f"{path}: unknown key(s) {unknown} (allowed: {', '.join(CORRECTION_KEYS)})")
    gender = _mapping(data, "gender", path)
    age = _mapping(data, "age", path)
    swap = data.get("swap_mask_normal") or []
    if not isinstance(swap, list):
        raise UserError(f"{path}: swap_mask_normal must be a list of person ids")
    return LabelCorrections(
        gender={pid: _parse_gender(g, f"{path} gender.{pid}") for pid, g in gender.items()},
        age={pid: _parse_age(a, f"{path} age.{pid}") for pid, a in age.items()},
        swap_mask_normal=frozenset(swap),
        source=str(path),
    )


def _mapping(data: dict, key: str, path: Path) -> dict[str, str]:
    value = data.get(key) or {}
    if not isinstance(value, dict):
        raise UserError(f'{path}: {key} must map person ids to values, e.g. {key}: {{"000020": ...}}')
    return value


@dataclass(frozen=True)
class _Person:
    person_id: str
    gender: int
    age: int
    folder: Path


def read_boostcamp_train(
    root: str | Path,
    corrections: LabelCorrections | str | Path | None = None,
    skip_bad_files: bool = False,
) -> list[BoostcampRecord]:
    """Training records (7 per person, in train.csv order) with corrections applied.

    A person folder that is missing, lacks an expected image, holds two files for one image or
    a file with an unknown stem raises UserError naming it; with ``skip_bad_files`` the problem
    is skipped (the person, or the one file) and the count is logged.
    """
    root = require_path(root, "data.root", kind="folder")
    people = _read_people(root / "train")
    if corrections is not None and not isinstance(corrections, LabelCorrections):
        corrections = load_label_corrections(corrections)
    corrections = corrections or LabelCorrections()
    _check_correction_ids(corrections, {p.person_id for p in people})
    records: list[BoostcampRecord] = []
    skipped = 0
    for person in people:
        try:
            images, unknown = _person_images(person.folder, skip_bad_files)
        except UserError as exc:
            if not skip_bad_files:
                raise
            log.warning("skipping person: %s", exc)
            skipped += 1
            continue
        skipped += unknown
        records.extend(_person_records(_corrected(person, corrections), images, corrections))
    if skipped:
        log.warning("skipped %d bad file(s) or person folder(s) under %s", skipped, root / "train")
    return records


def _read_people(train_dir: Path) -> list[_Person]:
    """People listed in train.csv, validated."""
    csv_path = require_path(train_dir / "train.csv", "data.root", kind="file")
    images_dir = train_dir / "images"
    people, seen = [], set()
    for line, row in csv_rows(csv_path, TRAIN_CSV_COLUMNS):
        where = f"{csv_path}:{line}"
        folder = images_dir / row["path"]
        if row["id"] in seen:
            raise UserError(f"{where}: person id '{row['id']}' appears twice")
        seen.add(row["id"])
        gender = _parse_gender(row["gender"], f"person folder {folder}")
        people.append(_Person(row["id"], gender, _parse_age(row["age"], where), folder))
    return people


def _person_images(folder: Path, skip_unknown: bool) -> tuple[dict[str, Path], int]:
    """(image stem -> file for the 7 expected images, number of unknown files skipped).

    UserError names a missing image, a duplicate, or (unless ``skip_unknown``) an unknown file.
    """
    if not folder.is_dir():
        raise UserError(f"{folder}: person folder listed in train.csv does not exist")
    found: dict[str, Path] = {}
    unknown = 0
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.name.startswith(".") or not is_image_file(path):
            continue
        stem = path.stem.lower()
        if stem not in MASK_FILE_LABELS:
            if not skip_unknown:
                raise UserError(f"{path}: unknown image name (expected one of {', '.join(MASK_FILE_LABELS)})")
            log.warning("skipping %s: unknown image name", path)
            unknown += 1
        elif stem in found:
            raise UserError(f"{path}: duplicate of {found[stem].name} in the same person folder")
        else:
            found[stem] = path
    missing = [stem for stem in MASK_FILE_LABELS if stem not in found]
    if missing:
        raise UserError(f"{folder}: missing image(s) {missing} (expected {', '.join(MASK_FILE_LABELS)})")
    return found, unknown


def _corrected(person: _Person, corrections: LabelCorrections) -> _Person:
    return replace(
        person,
        gender=corrections.gender.get(person.person_id, person.gender),
        age=corrections.age.get(person.person_id, person.age),
    )


def _person_records(
    person: _Person, images: dict[str, Path], corrections: LabelCorrections
) -> list[BoostcampRecord]:
    group = age_group(person.age)
    swap = person.person_id in corrections.swap_mask_normal
    records = []
    for stem, file_mask in MASK_FILE_LABELS.items():
        mask = SWAPPED_MASK[file_mask] if swap else file_mask
        records.append(
            BoostcampRecord(
                path=images[stem],
                person_id=person.person_id,
                mask=mask,
                gender=person.gender,
                age_group=group,
                class_id=encode_class(mask, person.gender, group),
                age=person.age,
            )
        )
    return records


def _check_correction_ids(corrections: LabelCorrections, known_ids: set[str]) -> None:
    unknown = sorted(corrections.person_ids() - known_ids)
    if unknown:
        raise UserError(
            f"{corrections.source}: person id(s) {unknown[:5]} not in train.csv "
            "(use the id column exactly, with its zero padding)"
        )


def read_boostcamp_eval(root: str | Path) -> list[BoostcampEvalRecord]:
    """Eval records in eval/info.csv order; a listed image that is missing raises UserError."""
    root = require_path(root, "data.root", kind="folder")
    csv_path = require_path(root / "eval" / "info.csv", "data.root", kind="file")
    records = []
    for line, row in csv_rows(csv_path, ("ImageID",)):
        path = root / "eval" / "images" / row["ImageID"]
        if not path.is_file():
            raise UserError(f"{csv_path}:{line}: image '{path}' does not exist")
        answer = row.get("ans", "")
        label = _parse_answer(answer, f"{csv_path}:{line}") if answer else None
        records.append(BoostcampEvalRecord(path=path, image_id=row["ImageID"], label=label))
    return records


def _parse_answer(value: str, where: str) -> int:
    try:
        label = int(value)
    except ValueError:
        label = -1
    if not 0 <= label < len(CLASS_NAMES):
        raise UserError(f"{where}: ans '{value}' is not a class index 0..{len(CLASS_NAMES) - 1}")
    return label


def find_eval_root(source: str | Path) -> Path | None:
    """The dataset root when ``source`` is a boostcamp eval folder (holding info.csv) or its parent."""
    source = Path(source)
    if source.is_dir() and (source / "eval" / "info.csv").is_file():
        return source
    if source.is_dir() and source.name == "eval" and (source / "info.csv").is_file():
        return source.parent
    return None


def combine_mask_gender_age(probs: dict[str, torch.Tensor]) -> torch.Tensor:
    """18-way probabilities ``P(mask) P(gender) P(age)`` in class order ``mask*6 + gender*3 + age``."""
    mask, gender, age = probs["mask"], probs["gender"], probs["age"]
    return (mask[:, :, None, None] * gender[:, None, :, None] * age[:, None, None, :]).flatten(1)


def write_submission(out_dir: Path, image_ids: list[str], classes: list[int]) -> Path:
    """``out_dir/submission.csv``: ``ImageID,ans`` in the eval folder's info.csv order."""
    out_file = Path(out_dir) / "submission.csv"
    with open(out_file, "w", newline="") as fh:
        csv.writer(fh).writerows([["ImageID", "ans"], *zip(image_ids, classes, strict=True)])
    return out_file
