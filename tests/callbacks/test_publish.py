"""``publish``: one PNG encoding for the results file and TensorBoard, the same pixels in both."""

import io
from types import SimpleNamespace

import numpy as np
from lightning.pytorch.loggers import TensorBoardLogger
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from pipeline.callbacks.image_grid import publish


def test_file_and_tensorboard_hold_the_image_with_its_title(tmp_path):
    image = np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    logger = TensorBoardLogger(tmp_path / "tb", name="", version="")
    trainer = SimpleNamespace(loggers=[logger])
    publish(trainer, "val/predictions", image, 7, tmp_path / "results" / "grid.png", title="epoch 3", description="d")
    logger.experiment.flush()

    saved = Image.open(tmp_path / "results" / "grid.png")
    assert saved.info["Title"] == "epoch 3" and saved.info["Description"] == "d"
    np.testing.assert_array_equal(np.asarray(saved.convert("RGB")), image)

    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"images": 0})
    events.Reload()
    (logged,) = events.Images("val/predictions")
    assert (logged.step, logged.width, logged.height) == (7, 53, 37)
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(logged.encoded_image_string)).convert("RGB")), image)
