"""Boostcamp mask/gender/age reader: layout variations, bad files, label corrections, eval, splits."""

import hashlib
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.data.formats.boostcamp import (
    AGE_NAMES,
    CLASS_NAMES,
    GENDER_NAMES,
    MASK_FILE_LABELS,
    MASK_NAMES,
    LabelCorrections,
    age_group,
    decode_class,
    encode_class,
    load_label_corrections,
    read_boostcamp_eval,
    read_boostcamp_train,
)
from pipeline.data.formats.image_folder import drop_unreadable
from pipeline.data.splits import split_by_group
from pipeline.utils.errors import UserError

PEOPLE = [("000001", "female", 45), ("000020", "male", 25), ("000645", "female", 60)]


def _write_image(path: Path, value: int = 128) -> None:
    ok, data = cv2.imencode(path.suffix.lower(), np.full((8, 6, 3), value, np.uint8))
    assert ok
    path.write_bytes(data.tobytes())


def _make_tree(root: Path, people=PEOPLE, extensions=(".jpg",)) -> Path:
    """A hand-made train/ tree in the real layout; extensions cycle over a person's images."""
    images = root / "train" / "images"
    rows = ["id,gender,race,age,path"]
    for pid, gender, age in people:
        folder = images / f"{pid}_{gender}_Asian_{age}"
        folder.mkdir(parents=True)
        for k, stem in enumerate(MASK_FILE_LABELS):
            _write_image(folder / f"{stem}{extensions[k % len(extensions)]}", 10 * k)
        rows.append(f"{pid},{gender},Asian,{age},{folder.name}")
    (root / "train" / "train.csv").write_text("\n".join(rows) + "\n")
    return root


def _folder(root: Path, pid: str) -> Path:
    return next((root / "train" / "images").glob(f"{pid}_*"))


def _snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_encode_decode_roundtrip_over_all_classes():
    seen = set()
    for mask in range(len(MASK_NAMES)):
        for gender in range(len(GENDER_NAMES)):
            for group in range(len(AGE_NAMES)):
                class_id = encode_class(mask, gender, group)
                assert decode_class(class_id) == (mask, gender, group)
                assert (
                    CLASS_NAMES[class_id] == f"{MASK_NAMES[mask]}/{GENDER_NAMES[gender]}/{AGE_NAMES[group]}"
                )
                seen.add(class_id)
    assert seen == set(range(18)) and len(CLASS_NAMES) == 18
    with pytest.raises(ValueError):
        decode_class(18)


@pytest.mark.parametrize(("age", "group"), [(18, 0), (29, 0), (30, 1), (59, 1), (60, 2), (80, 2)])
def test_age_group_boundaries(age, group):
    assert age_group(age) == group


def test_reads_labels_odd_extensions_and_ignores_stray_files(tmp_path):
    root = _make_tree(tmp_path, extensions=(".jpg", ".JPG", ".jpeg", ".PNG", ".png", ".JPEG", ".Jpg"))
    folder = _folder(root, "000001")
    (folder / ".DS_Store").write_bytes(b"\x00Bud1")
    (folder / "._mask1.jpg").write_bytes(b"AppleDouble junk")
    (folder / "README.txt").write_text("notes")
    (root / "train" / "images" / ".DS_Store").write_bytes(b"\x00Bud1")
    (root / "train" / "images" / "999999_male_Asian_30").mkdir()  # not in train.csv: ignored

    records = read_boostcamp_train(root)

    assert len(records) == 21
    assert [r.person_id for r in records[:7]] == ["000001"] * 7
    first = records[:7]
    assert [r.mask for r in first] == [0, 0, 0, 0, 0, 1, 2]
    assert {r.path.suffix for r in first} == {".jpg", ".JPG", ".jpeg", ".PNG", ".png", ".JPEG", ".Jpg"}
    assert all(r.gender == 1 and r.age == 45 and r.age_group == 1 for r in first)
    assert {(r.person_id, r.gender, r.age_group) for r in records} == {
        ("000001", 1, 1),
        ("000020", 0, 0),
        ("000645", 1, 2),
    }
    assert all(r.class_id == encode_class(r.mask, r.gender, r.age_group) for r in records)


def test_missing_image_names_folder_or_is_skipped(tmp_path, caplog):
    root = _make_tree(tmp_path)
    folder = _folder(root, "000020")
    (folder / "incorrect_mask.jpg").unlink()
    with pytest.raises(UserError, match=r"000020_male_Asian_25.*incorrect_mask"):
        read_boostcamp_train(root)
    with caplog.at_level(logging.WARNING):
        records = read_boostcamp_train(root, skip_bad_files=True)
    assert {r.person_id for r in records} == {"000001", "000645"}
    assert "skipped 1 bad file(s) or person folder(s)" in caplog.text


def test_missing_person_folder_names_it(tmp_path):
    root = _make_tree(tmp_path)
    folder = _folder(root, "000645")
    for p in folder.iterdir():
        p.unlink()
    folder.rmdir()
    with pytest.raises(UserError, match="000645_female_Asian_60"):
        read_boostcamp_train(root)
    assert len(read_boostcamp_train(root, skip_bad_files=True)) == 14


def test_unknown_file_stem_names_file_or_is_skipped(tmp_path, caplog):
    root = _make_tree(tmp_path)
    (_folder(root, "000001") / "mask6.jpg").write_bytes(b"x")
    with pytest.raises(UserError, match=r"mask6\.jpg"):
        read_boostcamp_train(root)
    with caplog.at_level(logging.WARNING):
        records = read_boostcamp_train(root, skip_bad_files=True)
    assert len(records) == 21
    assert "skipped 1 bad file(s)" in caplog.text


def test_duplicate_image_for_one_stem_is_an_error(tmp_path):
    root = _make_tree(tmp_path)
    _write_image(_folder(root, "000001") / "mask3.png")
    with pytest.raises(UserError, match="duplicate"):
        read_boostcamp_train(root)


def test_unknown_gender_names_the_folder(tmp_path):
    root = _make_tree(tmp_path, people=[("000007", "unknown", 33)])
    with pytest.raises(UserError, match=r"000007_unknown_Asian_33.*unknown gender 'unknown'"):
        read_boostcamp_train(root)


def test_missing_csv_column_is_an_error(tmp_path):
    root = _make_tree(tmp_path)
    csv_path = root / "train" / "train.csv"
    csv_path.write_text(csv_path.read_text().replace("path", "folder", 1))
    with pytest.raises(UserError, match=r"missing column\(s\) \['path'\]"):
        read_boostcamp_train(root)


def test_corrupt_image_is_found_at_load_time(tmp_path, caplog):
    root = _make_tree(tmp_path)
    bad = _folder(root, "000020") / "mask2.jpg"
    bad.write_bytes(b"\xff\xd8 truncated jpeg")
    records = read_boostcamp_train(root)
    with pytest.raises(UserError, match=str(bad)):
        drop_unreadable(records)
    with caplog.at_level(logging.WARNING):
        kept = drop_unreadable(records, skip_bad_files=True)
    assert len(kept) == 20 and bad not in {r.path for r in kept}
    assert "skipped 1 unreadable image(s) of 21" in caplog.text


def test_label_corrections_apply_without_touching_disk(tmp_path):
    root = _make_tree(tmp_path)
    corrections = tmp_path / "fixes.yaml"
    corrections.write_text(
        'gender:\n  "000020": female\nage:\n  000001: 61\nswap_mask_normal:\n  - "000645"\n'
    )
    before = _snapshot(root)

    records = read_boostcamp_train(root, corrections=corrections)

    assert _snapshot(root) == before
    by_person = {pid: [r for r in records if r.person_id == pid] for pid, _, _ in PEOPLE}
    assert all(r.gender == 1 for r in by_person["000020"])
    assert all(r.age == 61 and r.age_group == 2 for r in by_person["000001"])
    swapped = {r.path.stem: r.mask for r in by_person["000645"]}
    assert swapped["incorrect_mask"] == 2 and swapped["normal"] == 1 and swapped["mask1"] == 0
    assert all(r.class_id == encode_class(r.mask, r.gender, r.age_group) for r in records)
    untouched = {r.path.stem: r.mask for r in read_boostcamp_train(root) if r.person_id == "000645"}
    assert untouched["incorrect_mask"] == 1 and untouched["normal"] == 2


def test_label_corrections_keep_zero_padding_and_accept_object(tmp_path):
    path = tmp_path / "fixes.yaml"
    path.write_text("gender: {000020: Male}\n")
    assert load_label_corrections(path).gender == {"000020": 0}
    root = _make_tree(tmp_path / "data")
    records = read_boostcamp_train(root, corrections=LabelCorrections(age={"000020": 70}))
    assert {r.age_group for r in records if r.person_id == "000020"} == {2}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('gender: {"123456": female}\n', r"person id\(s\) \['123456'\] not in train.csv"),
        ("genders: {}\n", r"unknown key\(s\) \['genders'\]"),
        ('gender: {"000020": robot}\n', "unknown gender 'robot'"),
        ('age: {"000020": old}\n', "age 'old' is not a whole number"),
        ("swap_mask_normal: 000645\n", "swap_mask_normal must be a list"),
        ("gender: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_label_corrections_name_the_file(tmp_path, text, message):
    root = _make_tree(tmp_path / "data")
    path = tmp_path / "fixes.yaml"
    path.write_text(text)
    with pytest.raises(UserError, match=message) as info:
        read_boostcamp_train(root, corrections=path)
    assert "fixes.yaml" in str(info.value)


def _make_eval(root: Path, header: str, rows: list[str]) -> None:
    images = root / "eval" / "images"
    images.mkdir(parents=True)
    for row in rows:
        _write_image(images / row.split(",")[0])
    (root / "eval" / "info.csv").write_text("\n".join([header, *rows]) + "\n")


def test_eval_reader_keeps_order_and_answers(tmp_path):
    _make_eval(tmp_path, "ImageID,ans", ["c3.jpg,5", "a1.png,17", "b2.JPG,"])
    records = read_boostcamp_eval(tmp_path)
    assert [r.image_id for r in records] == ["c3.jpg", "a1.png", "b2.JPG"]
    assert [r.label for r in records] == [5, 17, None]
    assert records[1].path == tmp_path / "eval" / "images" / "a1.png"


def test_eval_reader_without_answers_and_missing_file(tmp_path):
    _make_eval(tmp_path, "ImageID", ["x.jpg", "y.jpg"])
    assert [r.label for r in read_boostcamp_eval(tmp_path)] == [None, None]
    (tmp_path / "eval" / "images" / "y.jpg").unlink()
    with pytest.raises(UserError, match=r"info.csv:3: image .*y\.jpg' does not exist"):
        read_boostcamp_eval(tmp_path)


def test_eval_answer_outside_classes_is_an_error(tmp_path):
    _make_eval(tmp_path, "ImageID,ans", ["x.jpg,18"])
    with pytest.raises(UserError, match="ans '18'"):
        read_boostcamp_eval(tmp_path)


def test_person_level_split_has_no_leakage(tmp_path):
    people = [(f"{i:06d}", ("male", "female")[i % 2], 20 + 3 * i) for i in range(20)]
    records = read_boostcamp_train(_make_tree(tmp_path, people=people))
    strata = [r.gender * 3 + r.age_group for r in records]
    splits = split_by_group(
        [r.person_id for r in records], {"train": 0.6, "val": 0.2, "test": 0.2}, seed=0, strata=strata
    )
    people_in = {name: {records[i].person_id for i in idx} for name, idx in splits.items()}
    assert all(people_in.values())
    assert not people_in["train"] & people_in["val"]
    assert not people_in["train"] & people_in["test"]
    assert not people_in["val"] & people_in["test"]
    # Image level: every image lands in exactly one split, with all 7 of its person's images.
    all_indices = np.concatenate(list(splits.values()))
    assert sorted(all_indices.tolist()) == list(range(len(records)))
    for idx in splits.values():
        assert len(idx) % 7 == 0
