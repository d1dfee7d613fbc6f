"""Tests for the verification folder reader, dataset and pairs CSV files."""

import json

import cv2
import numpy as np
import pytest
import torch

from pipeline.data.formats.verification import (
    VerificationDataset,
    normalise_identity,
    read_pair_scores,
    read_pairs_csv,
    read_verification,
    write_pair_scores,
    write_pairs_csv,
)
from pipeline.data.splits import split_by_group
from pipeline.utils.errors import UserError


def _write_set(root, files: dict[str, int], meta: dict[str, object] | None = None):
    """Tiny images at images/<key> and meta.json (defaults to ``files``)."""
    for key in files:
        path = root / "images" / key
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), np.full((8, 8, 3), 100, np.uint8))
    (root / "meta.json").write_text(json.dumps(files if meta is None else meta))
    return root


def test_normalise_identity():
    assert normalise_identity("0001") == "1"
    assert normalise_identity("0") == "0"
    assert normalise_identity("000") == "0"
    assert normalise_identity("alice01") == "alice01"


def test_reader_matches_padded_folders_to_unpadded_keys(tmp_path):
    _write_set(tmp_path, {"0001/0.jpg": 0, "0001/1.JPG": 1, "2/0.png": 0, "bob/a.jpg": 1})
    meta = {"1/0.jpg": 0, "1/1.JPG": 1, "0002/0.png": 0, "bob/a.jpg": 1}
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    (tmp_path / "images" / ".DS_Store").write_text("x")
    (tmp_path / "images" / "0001" / "README.txt").write_text("x")
    records = read_verification(tmp_path)
    assert [(r.identity, r.path.name, r.identity_index, r.is_fake) for r in records] == [
        ("1", "0.jpg", 0, False),
        ("1", "1.JPG", 0, True),
        ("2", "0.png", 1, False),
        ("bob", "a.jpg", 2, True),
    ]
    assert records[0].path == tmp_path / "images" / "0001" / "0.jpg"


def test_reader_unlisted_image_errors_or_is_skipped(tmp_path):
    _write_set(tmp_path, {"1/0.jpg": 0, "1/1.jpg": 0}, meta={"1/0.jpg": 0})
    with pytest.raises(UserError, match="1.jpg.*not listed"):
        read_verification(tmp_path)
    with pytest.warns(UserWarning, match="skipped 1 images"):
        records = read_verification(tmp_path, skip_bad_files=True)
    assert [r.path.name for r in records] == ["0.jpg"]


def test_reader_meta_entry_without_file_names_it(tmp_path):
    _write_set(tmp_path, {"1/0.jpg": 0}, meta={"1/0.jpg": 0, "7/3.jpg": 1})
    with pytest.raises(UserError, match="'7/3.jpg' has no image"):
        read_verification(tmp_path, skip_bad_files=True)


@pytest.mark.parametrize("value", [2, -1, "1", True, 0.0, None])
def test_reader_rejects_labels_other_than_0_or_1(tmp_path, value):
    _write_set(tmp_path, {"1/0.jpg": 0}, meta={"1/0.jpg": value})
    with pytest.raises(UserError, match="use 0 \\(real\\) or 1 \\(fake\\)"):
        read_verification(tmp_path)


def test_reader_rejects_two_folders_of_one_identity(tmp_path):
    _write_set(tmp_path, {"01/0.jpg": 0, "1/1.jpg": 0})
    with pytest.raises(UserError, match="same identity"):
        read_verification(tmp_path)


def test_reader_missing_meta_names_the_key(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(UserError, match="data.root.*meta.json"):
        read_verification(tmp_path)


def test_dataset_item(tmp_path):
    _write_set(tmp_path, {"3/0.jpg": 1})
    item = VerificationDataset(read_verification(tmp_path))[0]
    assert item["image"].shape == (3, 8, 8) and item["image"].dtype == torch.float32
    assert item["image"].max() <= 1.0
    assert item["label"].item() == 0 and item["is_fake"].item() is True


def test_identity_disjoint_split(tmp_path):
    files = {f"{i:03d}/{n}.jpg": int(n == 2) for i in range(12) for n in range(3)}
    records = read_verification(_write_set(tmp_path, files))
    splits = split_by_group([r.identity for r in records], {"train": 0.7, "val": 0.3}, seed=0)
    train_ids = {records[i].identity for i in splits["train"]}
    val_ids = {records[i].identity for i in splits["val"]}
    assert train_ids and val_ids and not train_ids & val_ids
    assert len(splits["train"]) + len(splits["val"]) == len(records)


def test_pairs_csv_roundtrip(tmp_path):
    pairs = [
        ({"path": "a/0.jpg", "label": "1"}, {"path": "a/1.jpg", "label": "1"}),
        ({"path": "b/0.jpg", "label": "2"}, {"path": "c/0.jpg", "label": "3"}),
    ]
    write_pairs_csv(tmp_path / "pairs.csv", pairs)
    assert read_pairs_csv(tmp_path / "pairs.csv") == pairs


def test_pairs_csv_odd_rows_and_missing_column(tmp_path):
    (tmp_path / "odd.csv").write_text("path\na.jpg\nb.jpg\nc.jpg\n")
    with pytest.raises(UserError, match="3 rows"):
        read_pairs_csv(tmp_path / "odd.csv")
    (tmp_path / "nopath.csv").write_text("file\na.jpg\nb.jpg\n")
    with pytest.raises(UserError, match="no 'path' column"):
        read_pairs_csv(tmp_path / "nopath.csv")


def test_pair_scores_roundtrip(tmp_path):
    scores = np.array([0.25, -0.5, 0.123456789])
    write_pair_scores(tmp_path / "s.csv", scores)
    assert (tmp_path / "s.csv").read_text().splitlines()[0] == "pair_id,similarity"
    plain = read_pair_scores(tmp_path / "s.csv")
    np.testing.assert_array_equal(plain["similarity"], scores)
    np.testing.assert_array_equal(plain["pair_id"], [0, 1, 2])
    write_pair_scores(tmp_path / "t.csv", scores, same=[True, False, True], threshold=0.1)
    full = read_pair_scores(tmp_path / "t.csv")
    assert list(full) == ["pair_id", "similarity", "same", "threshold"]
    np.testing.assert_array_equal(full["same"], [True, False, True])
    np.testing.assert_array_equal(full["threshold"], [0.1] * 3)
