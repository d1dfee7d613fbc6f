"""data.sampler: each datamodule accepts its own samplers and names them when given another."""

from __future__ import annotations

import pytest

from pipeline.data.classification import ImageFolderDataModule
from pipeline.data.detection import VocDetectionDataModule
from pipeline.data.glasses import GlassesDataModule
from pipeline.utils.errors import UserError


@pytest.mark.parametrize("module, options", [
    (ImageFolderDataModule, "random, weighted"),
    (VocDetectionDataModule, "random, repeat_factor"),
    (GlassesDataModule, "share, random, weighted"),
])
def test_unknown_sampler_names_the_options(module, options, tmp_path):
    with pytest.raises(UserError, match=rf"^data.sampler: 'bogus' is not one of {options}$"):
        module(sampler="bogus", cache_dir=str(tmp_path))
    assert module(sampler=options.split(", ")[-1], cache_dir=str(tmp_path)).sampler == options.split(", ")[-1]
