"""bin/inspect_data.py: the dataset report against counts computed here, planted duplicates and leaks."""

from __future__ import annotations

import csv
import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
from conftest import compose_config, run_cli

from pipeline.analysis.dataset_report import build_report
from pipeline.analysis.items import Item, list_items
from pipeline.trainers.engine import build_datamodule

TINY = ["experiment=mask_age_gender", "data.synthetic.num_people=40", "data.synthetic.image_size=[32,24]",
        "data.image_size=[32,24]", "data.num_workers=0"]


def datamodule_for(root: Path | None, tmp_path: Path, data_dir: Path):
    cfg = compose_config(TINY + ([f"data.root={root}"] if root else []), tmp_path / "run", data_dir)
    return build_datamodule(cfg)


@pytest.fixture(scope="module")
def clean_root(tmp_path_factory, data_dir) -> Path:
    datamodule = datamodule_for(None, tmp_path_factory.mktemp("gen"), data_dir)
    return Path(datamodule.data_root)


def inspect(root: Path, out: Path):
    proc = run_cli("inspect_data.py", *TINY, f"data.root={root}", f"out_dir={out}")
    report = json.loads((out / "data_report.json").read_text()) if (out / "data_report.json").is_file() else None
    return proc, report


def test_clean_set_passes_and_counts_match(clean_root, tmp_path, data_dir):
    proc, report = inspect(clean_root, tmp_path / "report")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    datamodule = datamodule_for(clean_root, tmp_path, data_dir)
    names = datamodule.info["class_names"]
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


def test_unknown_key_is_one_line_and_exit_2(tmp_path):
    proc = run_cli("inspect_data.py", "experiment=mask_age_gender", "data.nope=1")
    assert proc.returncode == 2 and proc.stderr.strip().startswith("error:")
