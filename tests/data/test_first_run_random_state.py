"""A first run (which draws its synthetic data and decodes its cache) leaves the random state exactly as a
rerun (which reads both) does, so both initialise and train the same model."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from conftest import compose_config
from lightning.fabric.utilities.seed import seed_everything

from pipeline.runs.run import build_datamodule

SMALL = {
    "mask_age_gender_multihead": ["data.synthetic.num_people=12"],
    "image_folder": ["data.synthetic.num_people=8"],
    "glasses": ["data.synthetic.num_images=60", "data.synthetic.num_photos=6"],
    "face_verification": ["data.synthetic.num_identities=12"],
    "facemask_detection": ["data.synthetic.num_images=24"],
    "facemask_crops": ["data.synthetic.num_images=24"],
}


@pytest.mark.parametrize("experiment", SMALL)
def test_first_run_and_rerun_leave_the_same_random_state(experiment, tmp_path):
    states = []
    for _ in range(2):  # the first builds the data and its decode cache, the second reads them
        cfg = compose_config([f"experiment={experiment}", "data.num_workers=0", *SMALL[experiment]], tmp_path / "run",
                             tmp_path / "data")
        seed_everything(42, workers=True)
        build_datamodule(cfg)
        states.append((torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()))
    assert "decoded" in {p.name for p in (tmp_path / "data").iterdir()}, "the runs built no decode cache"
    assert torch.equal(states[0][0], states[1][0])
    np.testing.assert_array_equal(states[0][1], states[1][1])
    assert states[0][2] == states[1][2]
