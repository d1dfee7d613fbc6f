"""Tests for the face-verification datamodule: synthetic cache, identity-disjoint seeded splits, P x K loader, cutout."""

import pytest
import torch

from pipeline.data.synthetic.cache import READY_MARKER
from pipeline.data.synthetic.verification import generate_verification
from pipeline.data.verification import VerificationDataModule
from pipeline.utils.errors import UserError

SMALL = {"num_identities": 12, "images_per_identity": 3, "fakes_per_identity": 2}


def _module(tmp_path, **kwargs):
    options = dict(cache_dir=str(tmp_path / "cache"), synthetic=SMALL, image_size=32, batch_size=8,
                   images_per_identity=2, num_workers=0, seed=0)
    return VerificationDataModule(**{**options, **kwargs})


def _ready(module):
    module.prepare_data()
    module.setup("fit")
    return module


def _identities(dataset):
    return {r.identity for r in dataset.records}


def test_synthetic_set_is_generated_once_into_the_cache(tmp_path):
    module = _ready(_module(tmp_path))
    root = module.synthetic_root()
    assert (root / READY_MARKER).is_file() and (root / "meta.json").is_file()
    stamp = (root / "meta.json").stat().st_mtime_ns
    _module(tmp_path).prepare_data()
    assert (root / "meta.json").stat().st_mtime_ns == stamp
    assert _module(tmp_path, synthetic={**SMALL, "seed": 1}).synthetic_root() != root


def test_splits_are_identity_disjoint_and_seeded(tmp_path):
    a = _ready(_module(tmp_path)).datasets
    b = _ready(_module(tmp_path)).datasets
    c = _ready(_module(tmp_path, seed=1)).datasets
    ids = {split: _identities(ds) for split, ds in a.items()}
    assert not ids["train"] & ids["val"] and not ids["train"] & ids["test"] and not ids["val"] & ids["test"]
    assert set().union(*ids.values()) == {str(i) for i in range(12)}
    assert all(_identities(b[s]) == ids[s] for s in ids)
    assert any(_identities(c[s]) != ids[s] for s in ids)
    assert any(r.is_fake for r in a["val"].records)  # val keeps the fakes


def test_train_loader_yields_p_by_k_batches(tmp_path):
    module = _ready(_module(tmp_path, passes=2))
    batches = list(module.train_dataloader())
    train_ids = len(_identities(module.datasets["train"]))
    assert len(batches) == 2 * (train_ids // 4)
    for batch in batches:
        assert batch["image"].shape == (8, 3, 32, 32)
        assert torch.unique(batch["label"], return_counts=True)[1].tolist() == [2] * 4
        assert set(batch) == {"image", "label", "is_fake", "index"}


def test_cutout_blacks_out_a_part_from_the_landmarks(tmp_path):
    module = _ready(_module(tmp_path, cutout={"parts": ["eyes"], "p": 1.0}, mean=[0, 0, 0], std=[1, 1, 1], augment=None))
    image = module.datasets["train"][0]["image"]
    plain = _ready(_module(tmp_path, mean=[0, 0, 0], std=[1, 1, 1], augment=None)).datasets["train"][0]["image"]
    black = (image.sum(0) == 0) & (plain.sum(0) > 0)
    assert black.sum() >= 20


def test_user_data_root_and_config_mistakes(tmp_path):
    root = generate_verification(tmp_path / "mine", image_size=32, **SMALL)
    module = _ready(_module(tmp_path, root=str(root)))
    assert module.info.num_identities == 12 and module.info.input_size == (3, 32, 32)
    assert module.preprocess(torch.zeros(40, 40, 3, dtype=torch.uint8).numpy()).shape == (3, 32, 32)
    with pytest.raises(UserError, match="data.root"):
        _module(tmp_path, root=str(tmp_path / "missing")).prepare_data()
    with pytest.raises(UserError, match="batch_size"):
        _module(tmp_path, batch_size=7)
    with pytest.raises(UserError, match="data.landmarks_csv"):
        _ready(_module(tmp_path, root=str(root), cutout={"p": 1.0}, landmarks_csv=str(tmp_path / "none.csv")))
