"""A fast_dev_run (one batch of train, val and test) of every experiment through train()."""

from __future__ import annotations

import pytest
from conftest import EXPERIMENTS, compose_config

from pipeline.trainers.engine import train

# One batch per split needs a few images, not the thousands the shipped synthetic sets generate (the generators
# themselves are the same; each size is its own cache folder).
SMALL_DATA = {"face_verification": ["data.synthetic.num_identities=40"], "facemask_crops": ["data.synthetic.num_images=60"],
              "facemask_detection": ["data.synthetic.num_images=60"], "glasses": ["data.synthetic.num_images=300"],
              "image_folder": ["data.synthetic.num_people=20"], "mask_age_gender": ["data.synthetic.num_people=60"],
              "mask_age_gender_multihead": ["data.synthetic.num_people=60"]}


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_fast_dev_run(experiment, tmp_path, data_dir):
    cfg = compose_config([f"experiment={experiment}", "debug=fast", *SMALL_DATA.get(experiment, [])], tmp_path / "run",
                         data_dir)
    train(cfg)
    assert (tmp_path / "run" / "results" / "metrics.json").is_file()
