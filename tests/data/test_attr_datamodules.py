"""Classification datamodules: leakage-free splits, corrections, bad files, weighted sampling, caching."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from pipeline.data.classification import ImageFolderDataModule
from pipeline.data.face_attributes import BoostcampDataModule, FaceMaskCropsDataModule, crop_box
from pipeline.data.samplers.weighted import InverseFrequencySampler
from pipeline.data.synthetic.boostcamp import generate_boostcamp
from pipeline.data.synthetic.cache import GENERATOR_VERSION, READY_MARKER
from pipeline.data.synthetic.voc_facemask import generate_voc_facemask
from pipeline.utils.errors import UserError

SIZE = [32, 24]


@pytest.fixture(scope="module")
def boostcamp_root(tmp_path_factory):
    return generate_boostcamp(tmp_path_factory.mktemp("bc"), num_people=60, num_eval_people=1, image_size=tuple(SIZE), seed=2)


def boostcamp(root, **kwargs) -> BoostcampDataModule:
    dm = BoostcampDataModule(root=str(root), image_size=SIZE, batch_size=16, num_workers=0, seed=3, **kwargs)
    dm.setup()
    return dm


def people(dataset) -> set[str]:
    return {s.path.parent.name for s in dataset.samples}


def test_boostcamp_split_is_by_person_and_stratified(boostcamp_root):
    dm = boostcamp(boostcamp_root)
    splits = {name: people(ds) for name, ds in dm.datasets.items()}
    assert not (splits["train"] & splits["val"]) and not (splits["train"] & splits["test"]) and not (splits["val"] & splits["test"])
    assert sum(len(p) for p in splits.values()) == 60
    assert all(len(ds) == 7 * len(splits[name]) for name, ds in dm.datasets.items())
    assert sum(dm.info.class_counts) == len(dm.datasets["train"]) and len(dm.info.class_counts) == 18
    item = dm.datasets["val"][0]
    assert item["image"].shape == (3, *SIZE)
    assert int(item["label"]) == int(item["mask"]) * 6 + int(item["gender"]) * 3 + int(item["age"])
    assert boostcamp(boostcamp_root).datasets["test"].samples == dm.datasets["test"].samples


@pytest.mark.parametrize("target, classes", [("mask", 3), ("gender", 2), ("age", 3)])
def test_separate_task_targets(boostcamp_root, target, classes):
    dm = boostcamp(boostcamp_root, target=target)
    labels = dm.datasets["train"].labels()
    assert dm.info.class_names == dm.info.heads[target] and len(dm.info.class_names) == classes
    assert np.array_equal(labels, dm.datasets["train"].labels(target))


def test_label_corrections_apply_at_read_time(boostcamp_root, tmp_path):
    base = boostcamp(boostcamp_root)
    sample = base.datasets["train"].samples[0]
    person_id = sample.path.parent.name.split("_")[0]
    new_gender = "female" if sample.labels["gender"] == 0 else "male"
    corrections = tmp_path / "fix.yaml"
    corrections.write_text(f'gender:\n  "{person_id}": {new_gender}\n')
    fixed = boostcamp(boostcamp_root, label_corrections=str(corrections))
    relabelled = next(s for s in fixed.datasets["train"].samples if s.path == sample.path)
    assert relabelled.labels["gender"] == 1 - sample.labels["gender"]


def test_corrupt_image_is_named_or_skipped(boostcamp_root, tmp_path):
    import shutil

    root = shutil.copytree(boostcamp_root, tmp_path / "copy")
    bad = next((root / "train" / "images").glob("*/mask3.*"))
    bad.write_bytes(b"not an image")
    with pytest.raises(UserError, match=bad.name):
        boostcamp(root)
    dm = boostcamp(root, skip_bad_files=True)
    assert sum(len(ds) for ds in dm.datasets.values()) == 60 * 7 - 1


def test_facemask_crops_split_by_source_image(tmp_path):
    root = generate_voc_facemask(tmp_path / "voc", num_images=40, image_size=(96, 96), seed=1)
    dm = FaceMaskCropsDataModule(root=str(root), image_size=[32, 32], batch_size=8, num_workers=0, seed=0, margin=0.2)
    dm.setup()
    images = {name: {s.path for s in ds.samples} for name, ds in dm.datasets.items()}
    assert not (images["train"] & images["val"]) and not (images["train"] & images["test"]) and not (images["val"] & images["test"])
    sample = dm.datasets["train"].samples[0]
    x0, y0, x1, y1 = sample.box
    assert 0 <= x0 < x1 <= 96 and 0 <= y0 < y1 <= 96
    assert dm.datasets["train"][0]["image"].shape == (3, 32, 32)


def test_crop_box_grows_by_the_margin_and_stays_inside():
    assert crop_box((10, 20, 30, 60), 0.1, 100, 100) == (8, 16, 32, 64)
    assert crop_box((0, 0, 50, 50), 0.5, 60, 60) == (0, 0, 60, 60)


def test_image_folder_errors_name_the_problem(tmp_path):
    (tmp_path / "cats").mkdir()
    (tmp_path / "dogs").mkdir()
    (tmp_path / "cats" / "a.jpg").write_bytes(b"junk")
    dm = ImageFolderDataModule(root=str(tmp_path), num_workers=0)
    with pytest.raises(UserError, match="dogs"):
        dm.setup()
    csv_file = tmp_path / "labels.csv"
    csv_file.write_text("path,label\ncats/a.jpg,bird\n")
    with pytest.raises(UserError, match="bird"):
        ImageFolderDataModule(root=str(csv_file), class_names=["cats", "dogs"], num_workers=0).setup()


def test_weighted_sampler_takes_effect(boostcamp_root):
    random_dm = boostcamp(boostcamp_root)
    weighted_dm = boostcamp(boostcamp_root, sampler="weighted")
    labels = weighted_dm.datasets["train"].labels()

    def share_of_rarest(dm) -> float:
        sampler = dm.train_sampler(dm.datasets["train"])
        drawn = Counter(labels[i] for epoch in range(5) for i in (sampler.set_epoch(epoch) or list(sampler)))
        rarest = min(set(labels), key=lambda c: (labels == c).sum())
        return drawn[rarest] / sum(drawn.values())

    assert isinstance(weighted_dm.train_sampler(weighted_dm.datasets["train"]), InverseFrequencySampler)
    assert share_of_rarest(weighted_dm) > 2 * share_of_rarest(random_dm)


def test_weighted_sampler_shards_by_rank_and_reseeds_per_epoch():
    labels = [0] * 90 + [1] * 10
    shards = [list(InverseFrequencySampler(labels, seed=1, rank=r, world_size=2)) for r in range(2)]
    full = list(InverseFrequencySampler(labels, seed=1))
    assert len(shards[0]) == len(shards[1]) == 50
    assert shards[0] == full[0::2] and shards[1] == full[1::2]
    sampler = InverseFrequencySampler(labels, seed=1)
    sampler.set_epoch(1)
    assert list(sampler) != full


def test_synthetic_cache_is_generated_once_and_redone_when_half_written_or_older(tmp_path):
    dm = ImageFolderDataModule(cache_dir=str(tmp_path), synthetic={"num_people": 6, "image_size": [32, 24]}, num_workers=0)
    dm.prepare_data()
    folder = dm.data_root
    assert (folder / READY_MARKER).is_file() and sorted(p.name for p in folder.iterdir() if p.is_dir()) == ["incorrect", "not_wear", "wear"]
    stamp = (folder / "wear").stat().st_mtime_ns
    dm.prepare_data()
    assert (folder / "wear").stat().st_mtime_ns == stamp
    (folder / READY_MARKER).unlink()
    (folder / "stray.txt").write_text("half-written")
    dm.prepare_data()
    assert (folder / READY_MARKER).is_file() and not (folder / "stray.txt").exists()
    (folder / READY_MARKER).write_text("ok\n")  # a complete copy from an older generator
    (folder / "stray.txt").write_text("older generator")
    dm.prepare_data()
    assert (folder / READY_MARKER).read_text().strip() == f"v{GENERATOR_VERSION}" and not (folder / "stray.txt").exists()
    dm.setup()
    assert dm.info.class_names == ["incorrect", "not_wear", "wear"]
