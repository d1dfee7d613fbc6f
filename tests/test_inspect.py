"""bin/inspect_data.py: the dataset report against counts computed here, planted duplicates and leaks."""

from __future__ import annotations

import csv
import json
import shutil
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import compose_config, run_main
from PIL import Image

from pipeline.analysis.dataset_report import build_report
from pipeline.analysis.items import Item, list_items
from pipeline.runs.run import build_datamodule

TINY = ["experiment=mask_age_gender", "data.synthetic.num_people=40", "data.synthetic.image_size=[32,24]",
        "data.image_size=[32,24]", "data.num_workers=0"]


def datamodule_for(root: Path | None, tmp_path: Path, data_dir: Path):
    cfg = compose_config(TINY + ([f"data.root={root}"] if root else []), tmp_path / "run", data_dir)
    return build_datamodule(cfg)


@pytest.fixture(scope="module")
def clean_root(module_tmp, data_dir) -> Path:
    datamodule = datamodule_for(None, module_tmp, data_dir)
    return Path(datamodule.data_root)


def inspect(root: Path, out: Path):
    proc = run_main("inspect_data.py", *TINY, f"data.root={root}", f"out_dir={out}")
    report = json.loads((out / "data_report.json").read_text()) if (out / "data_report.json").is_file() else None
    return proc, report


def test_clean_set_passes_and_counts_match(clean_root, tmp_path, data_dir):
    proc, report = inspect(clean_root, tmp_path / "report")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    datamodule = datamodule_for(clean_root, tmp_path, data_dir)
    names = datamodule.info.class_names
    expected = Counter((names[s.labels["label"]], split) for split, ds in datamodule.datasets.items() for s in ds.samples)
    got = {(label, split): n for label, per in report["counts"].items() for split, n in per.items() if split != "total"}
    assert got == dict(expected)
    folders = [p for p in (clean_root / "train" / "images").iterdir() if p.is_dir()]
    assert report["groups"]["groups"] == len(folders)
    assert report["exact_duplicates"] == [] and report["group_leaks"] == {}
    hidden = [p for p in (clean_root / "train" / "images").rglob("._*")]
    assert sum(u["reason"].startswith("hidden") for u in report["unusable"]) == len(hidden)
    for name in ("data_report.md", "counts.png", "groups_sizes.png", "samples.png"):
        assert (tmp_path / "report" / name).is_file()


def test_person_copied_under_a_new_id_is_caught_as_duplicates_across_splits(clean_root, tmp_path, data_dir):
    root = tmp_path / "planted"
    shutil.copytree(clean_root, root)
    rows = list(csv.DictReader((root / "train" / "train.csv").open()))
    copies = {}
    for n, row in enumerate(rows[:5]):
        copy = dict(row, id=f"9{n:05d}", path=f"9{n:05d}_{row['path'].split('_', 1)[1]}")
        shutil.copytree(root / "train" / "images" / row["path"], root / "train" / "images" / copy["path"])
        rows.append(copy)
        copies[copy["path"]] = row["path"]
    with (root / "train" / "train.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    # Independently: the split of every person folder, then which copies sit apart from their original.
    datamodule = datamodule_for(root, tmp_path, data_dir)
    split_of = {Path(s.path).parent.name: split for split, ds in datamodule.datasets.items() for s in ds.samples}
    apart = [c for c, original in copies.items() if split_of[c] != split_of[original]]
    assert apart, "the seeded split put every copy beside its original; plant more copies"
    proc, report = inspect(root, tmp_path / "report")
    assert proc.returncode == 1, proc.stdout[-2000:]
    across = [d for d in report["exact_duplicates"] if len({i["split"] for i in d}) > 1]
    images_per_person = 7
    assert len(across) == images_per_person * len(apart)
    assert len(report["exact_duplicates"]) == images_per_person * len(copies)
    assert "identical images across splits" in proc.stdout


def test_group_in_two_splits_is_a_leak(clean_root, tmp_path, data_dir):
    items = list_items(datamodule_for(clean_root, tmp_path, data_dir))
    moved = next(i for i in items if i.split == "train")
    other = "val" if moved.split != "val" else "test"
    planted = [Item(i.path, i.label, i.group, other) if i == moved else i for i in items]
    report, _ = build_report(planted)
    assert report.group_leaks == {moved.group: sorted(["train", other], key=["train", "val", "test"].index)}
    assert any("more than one split" in p for p in report.problems)
    clean, _ = build_report(items)
    assert clean.group_leaks == {} and clean.problems == []


def test_a_users_presplit_folders_leaking_a_person_are_caught_through_group_by(tmp_path, data_dir):
    """Pre-split class folders whose person (``<person>_<photo>`` names) sits in train and in test."""
    for split, people in (("train", "abc"), ("val", "d"), ("test", "ae")):
        for person in people:
            for photo in range(2):
                _photo(tmp_path / "data" / split / ("x" if ord(person) % 2 else "y") / f"{person}_{photo}.png",
                       ord(person) * 10 + photo + 100 * len(split))
    cfg = compose_config(["experiment=image_folder", f"data.root={tmp_path / 'data'}", "data.group_by='^([^_]+)_'",
                          "data.num_workers=0"], tmp_path / "run", data_dir)
    report, _ = build_report(list_items(build_datamodule(cfg)))
    assert report.groups["groups"] == 5
    assert report.group_leaks == {"a": ["train", "test"]}
    assert any("more than one split" in p for p in report.problems)


def test_unknown_key_is_one_line_and_exit_2(tmp_path):
    proc = run_main("inspect_data.py", "experiment=mask_age_gender", "data.nope=1")
    assert proc.returncode == 2 and proc.stderr.strip().startswith("error:")


def test_no_command_shadows_a_standard_module():
    """Python puts a script's folder first on the import path: a ``bin/inspect.py`` would replace the standard
    ``inspect`` that torch imports in every command. Commands are plain files, none named like a standard module."""
    bin_dir = Path(__file__).resolve().parents[1] / "bin"
    entries = list(bin_dir.iterdir())
    assert (bin_dir / "inspect_data.py").is_file()
    assert [p.name for p in entries if p.suffix == ".py" and not p.is_file()] == []
    assert [p.name for p in entries if p.stem in sys.stdlib_module_names] == []


def _photo(path: Path, seed: int, size: tuple[int, int] = (64, 48)) -> None:
    """A distinct random image (no two alike, so no duplicates are reported)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), np.uint8)).save(path)


def test_detection_report_counts_boxes_as_planted(tmp_path, data_dir):
    """Boxes per class, per image and small-box counts equal what the test wrote into the VOC files."""
    root, planted = tmp_path / "voc", {}
    rng = np.random.default_rng(0)
    for k in range(20):
        _photo(root / "images" / f"img{k}.png", k, (120, 90))
        boxes = [(str(rng.choice(["with_mask", "without_mask"])), int(x), 10, int(x) + int(w), 10 + int(w))
                 for x, w in zip(rng.integers(0, 60, k % 4), rng.integers(8, 40, k % 4))]
        planted[root / "images" / f"img{k}.png"] = boxes
        objects = "".join(f"<object><name>{n}</name><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax>"
                          f"<ymax>{y2}</ymax></bndbox></object>" for n, x1, y1, x2, y2 in boxes)
        (root / "annotations").mkdir(exist_ok=True)
        (root / "annotations" / f"img{k}.xml").write_text(
            f"<annotation><filename>img{k}.png</filename><size><width>120</width><height>90</height><depth>3</depth>"
            f"</size>{objects}</annotation>")
    cfg = compose_config(["experiment=facemask_detection", f"data.root={root}", "data.num_workers=0", "data.split_out=null"],
                         tmp_path / "run", data_dir)
    items = list_items(build_datamodule(cfg))
    report, _ = build_report(items)
    all_boxes = [b for boxes in planted.values() for b in boxes]
    assert {name: n["total"] for name, n in report.objects["per_class"].items()} == Counter(b[0] for b in all_boxes)
    assert {i.path: [o[0] for o in i.objects] for i in items} == {p: [b[0] for b in bs] for p, bs in planted.items()}
    assert report.objects["boxes_per_image"]["max"] == 3 and report.objects["boxes_per_image"]["images_without_boxes"] == 5
    assert report.objects["boxes_under_16px"] == sum(b[3] - b[1] < 16 for b in all_boxes)
    assert report.problems == []


def test_verification_report_counts_real_and_fake_per_identity(tmp_path, data_dir):
    root, meta = tmp_path / "ids", {}
    for person in range(10):
        for k in range(4):
            _photo(root / "images" / f"{person:04d}" / f"{k}.jpg", 100 * person + k)
            meta[f"{person:04d}/{k}.jpg"] = int(k == 3 and person % 2 == 0)
    (root / "meta.json").write_text(json.dumps(meta))
    cfg = compose_config(["experiment=face_verification", f"data.root={root}", "data.num_workers=0", "data.split_out=null"],
                         tmp_path / "run", data_dir)
    report, _ = build_report(list_items(build_datamodule(cfg)))
    assert {label: n["total"] for label, n in report.counts.items()} == {"real": 35, "fake": 5}
    assert report.groups == {"groups": 10, "images_min": 4, "images_median": 4.0, "images_max": 4}
    assert report.group_leaks == {} and report.objects is None


def _textured(seed: int, size: int = 96) -> np.ndarray:
    """A photo-like RGB image: a smooth random field with some texture."""
    rng = np.random.default_rng(seed)
    smooth = np.asarray(Image.fromarray(rng.integers(0, 255, (6, 6, 3), np.uint8)).resize((size, size), Image.BICUBIC),
                        np.float32)
    texture = np.kron(rng.normal(0, 20, (size // 4, size // 4, 1)), np.ones((4, 4, 3)))
    return np.clip(smooth + texture, 0, 255).astype(np.uint8)


def test_a_photo_copied_across_splits_is_a_leak_and_a_hash_look_alike_is_not(tmp_path):
    """A re-encoded and a brightened, resized copy of a photo are near duplicates (hash and pixels agree), a leak
    when they sit in other splits; two different images whose hashes happen to agree (the synthetic faces' case)
    are counted as look-alikes, neither listed nor a problem."""
    from pipeline.analysis.dataset_report import near_duplicates, read_facts

    photo = tmp_path / "photo.png"
    Image.fromarray(_textured(0)).save(photo)
    Image.fromarray(_textured(0)).save(tmp_path / "copy.jpg", quality=60)
    brighter = np.clip(_textured(0).astype(np.int16) + 25, 0, 255).astype(np.uint8)
    Image.fromarray(brighter).resize((80, 80)).save(tmp_path / "brighter.png")
    for seed in (1, 2):
        Image.fromarray(_textured(seed)).save(tmp_path / f"other{seed}.png")
    items = [Item(photo, "a", None, "train"), Item(tmp_path / "copy.jpg", "a", None, "test"),
             Item(tmp_path / "brighter.png", "a", None, "train"), Item(tmp_path / "other1.png", "a", None, "train"),
             Item(tmp_path / "other2.png", "a", None, "val")]
    report, facts = build_report(items)
    pairs = {frozenset(Path(p).name for p in (pair["a"], pair["b"])) for pair in report.near_duplicates}
    assert pairs == {frozenset(pair) for pair in (("photo.png", "copy.jpg"), ("photo.png", "brighter.png"),
                                                   ("copy.jpg", "brighter.png"))}
    assert report.problems == ["2 near-duplicate pair(s) across splits (the same photo re-encoded or edited)"]
    assert build_report(items, fail_on_near_duplicates=False)[0].problems == []
    # The two other images, given one perceptual hash as the generated faces get: look-alikes only.
    planted = {**facts, tmp_path / "other2.png": replace(read_facts(tmp_path / "other2.png"),
                                                         phash=facts[tmp_path / "other1.png"].phash)}
    near, lookalikes = near_duplicates(items, planted, max_distance=2)
    assert lookalikes == 1 and {frozenset(Path(p).name for p in (q["a"], q["b"])) for q in near} == pairs
    # ... unless the pixel check is switched off
    near, lookalikes = near_duplicates(items, planted, max_distance=2, max_pixel_difference=255)
    assert lookalikes == 0 and len(near) == 4
