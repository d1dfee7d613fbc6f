"""ClassificationTask: metrics against sklearn, TTA, multi-head recombination, report, predictions, export."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
import yaml
from conftest import predict_files
from sklearn.metrics import f1_score, precision_recall_fscore_support

from pipeline.callbacks.per_class_report import per_class_report
from pipeline.data.base import BaseDataModule
from pipeline.data.formats.boostcamp import (
    CLASS_NAMES,
    combine_mask_gender_age,
    encode_class,
    read_boostcamp_eval,
)
from pipeline.data.io import load_image
from pipeline.data.synthetic.boostcamp import generate_boostcamp
from pipeline.data.transforms import apply_transform, build_transform
from pipeline.delivery.predict import predict_into
from pipeline.delivery.writer import PredictionWriter
from pipeline.trainers.classification import ClassificationTask, Heads, tta_views
from pipeline.utils.contracts import DataInfo
from pipeline.utils.errors import UserError

SIZE = (32, 24)
HYP = {"loss": {"_target_": "pipeline.modules.losses.CrossEntropyLoss", "weight": "balanced"}}
HEADS = {"mask": ["wear", "incorrect", "not_wear"], "gender": ["male", "female"], "age": ["<30", "30-59", ">=60"]}


def make_task(class_names=("a", "b", "c"), heads=None, target=None, **kwargs) -> ClassificationTask:
    torch.manual_seed(0)
    model = {"backbone": "simple_cnn", "head": {"hidden_dims": [8]}}
    info = {"task": "t", "class_names": list(class_names), "input_size": [3, *SIZE], "mean": [0.5] * 3,
            "std": [0.5] * 3, "class_counts": [1] * len(class_names)}
    if target:  # one head of the dataset's classes, trained alone (data.target=<head>)
        info.update(target=target, combine="boostcamp", combine_class_names=list(CLASS_NAMES))
    if heads:
        model["heads"] = {name: len(names) for name, names in HEADS.items()}
        info.update(heads=HEADS, combine="boostcamp", combine_class_names=list(CLASS_NAMES),
                    head_class_counts={name: [1] * len(names) for name, names in HEADS.items()})
    return ClassificationTask(model=model, hyp=HYP, data_info=info, **kwargs).eval()


class FakeDataModule(BaseDataModule):
    """What prediction needs from a datamodule: the eval preprocessing (and BaseDataModule's loader)."""

    def __init__(self):
        super().__init__(batch_size=8, num_workers=0)
        self.transform = build_transform(None, SIZE, [0.5] * 3, [0.5] * 3)

    def preprocess(self, image):
        return apply_transform(self.transform, image)


def test_data_info_is_saved_as_plain_data_and_older_dicts_still_load(tmp_path):
    task = make_task(heads=True)  # built from a dict with the keys runs saved before DataInfo
    assert task.data_info.heads == HEADS and task.data_info.input_size == (3, *SIZE)
    torch.save({"hyper_parameters": dict(task.hparams)}, tmp_path / "t.ckpt")
    saved = torch.load(tmp_path / "t.ckpt", weights_only=True)["hyper_parameters"]["data_info"]
    assert saved["input_size"] == [3, *SIZE] and yaml.safe_load(yaml.safe_dump(saved)) == saved
    assert DataInfo.from_dict(saved) == task.data_info
    assert DataInfo.from_dict({**saved, "input_size": list(SIZE), "gone": 1}).input_size == (3, *SIZE)


def test_macro_f1_matches_sklearn_over_several_batches():
    task = make_task()
    metrics = task.build_metrics()
    rng = np.random.default_rng(0)
    preds, target = rng.integers(0, 3, 200), rng.integers(0, 3, 200)
    preds[:50] = target[:50]
    for chunk in np.array_split(np.arange(200), 7):
        for name, metric in metrics.items(keep_base=True, copy_state=False):
            assert Heads.output_of(name) == "label"
            metric.update(torch.from_numpy(preds[chunk]), torch.from_numpy(target[chunk]))
    values = metrics.compute()
    assert values["f1"].item() == pytest.approx(f1_score(target, preds, average="macro"), abs=1e-6)
    assert values["acc"].item() == pytest.approx(np.mean(preds == target), abs=1e-6)


def test_tta_changes_the_probabilities_and_averages_the_views():
    task = make_task()
    images = torch.randn(4, 3, *SIZE)
    plain = task.probabilities(images)["label"]
    flipped = task.probabilities(images, "flip")["label"]
    crops = task.probabilities(images, "flip_crops")["label"]
    assert not torch.allclose(plain, flipped) and not torch.allclose(flipped, crops)
    mirror = task.probabilities(images.flip(-1))["label"]
    assert torch.allclose(flipped, (plain + mirror) / 2, atol=1e-6)
    assert torch.allclose(crops.sum(1), torch.ones(4), atol=1e-5)
    assert len(tta_views(images, "flip_crops")) == 7
    with pytest.raises(UserError, match="task.tta"):
        make_task(tta="rotate")


def test_multihead_recombination_gives_the_18_classes():
    rng = torch.Generator().manual_seed(0)
    probs = {name: torch.rand(6, len(names), generator=rng).softmax(1) for name, names in HEADS.items()}
    combined = combine_mask_gender_age(probs)
    assert combined.shape == (6, 18)
    assert torch.allclose(combined.sum(1), torch.ones(6), atol=1e-6)
    for i in range(6):
        m, g, a = (int(probs[name][i].argmax()) for name in ("mask", "gender", "age"))
        assert int(combined[i].argmax()) == encode_class(m, g, a)
        assert combined[i, encode_class(1, 0, 2)] == pytest.approx(float(probs["mask"][i, 1] * probs["gender"][i, 0] * probs["age"][i, 2]))


def test_multihead_step_scores_each_head_and_the_combined_class():
    task = make_task(class_names=CLASS_NAMES, heads=True)
    assert set(task.heads.classes) == {"mask", "gender", "age", "label"}
    assert {"acc", "f1", "mask_f1", "gender_f1", "age_f1"} <= set(task.build_metrics().keys())
    batch = {"image": torch.randn(5, 3, *SIZE), "mask": torch.tensor([0, 1, 2, 0, 0]), "gender": torch.tensor([0, 1, 1, 0, 1]),
             "age": torch.tensor([2, 1, 0, 0, 1])}
    batch["label"] = batch["mask"] * 6 + batch["gender"] * 3 + batch["age"]
    out = task.model_step(batch)
    assert out["preds"].shape == (5, 18) and torch.equal(out["target"], batch["label"])
    assert set(out["pairs"]) == {"mask", "gender", "age", "label"}
    assert out["loss"].ndim == 0 and out["loss"] > 0


def test_per_class_report_matches_sklearn():
    rng = np.random.default_rng(1)
    truth, preds = rng.integers(0, 3, 100), rng.integers(0, 3, 100)
    matrix = torch.zeros(3, 3, dtype=torch.long)
    for t, p in zip(truth, preds):
        matrix[t, p] += 1
    rows = per_class_report({"label": (matrix, ["a", "b", "c"])})
    precision, recall, f1, support = precision_recall_fscore_support(truth, preds, labels=[0, 1, 2], zero_division=0)
    assert [r["class"] for r in rows] == ["a", "b", "c"]
    assert np.allclose([r["precision"] for r in rows], precision, atol=1e-6)
    assert np.allclose([r["recall"] for r in rows], recall, atol=1e-6)
    assert np.allclose([r["f1"] for r in rows], f1, atol=1e-6)
    assert [r["support"] for r in rows] == list(support)


@pytest.fixture(scope="module")
def boostcamp_root(tmp_path_factory):
    return generate_boostcamp(tmp_path_factory.mktemp("bc"), num_people=4, num_eval_people=2, image_size=SIZE, seed=0)


def test_submission_is_in_info_csv_order(boostcamp_root, tmp_path):
    task = make_task(class_names=CLASS_NAMES)
    out = predict_files(task, FakeDataModule(), boostcamp_root / "eval", tmp_path / "out", tta="flip")
    assert out.name == "submission.csv"
    with out.open() as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["ImageID", "ans"]
    assert [r[0] for r in rows[1:]] == [r.image_id for r in read_boostcamp_eval(boostcamp_root)]
    assert all(0 <= int(r[1]) < 18 for r in rows[1:])


def test_separate_head_runs_combine_into_the_submission(boostcamp_root, tmp_path):
    writer = PredictionWriter(tmp_path / "out", boostcamp_root / "eval", {})
    datamodule, probs = FakeDataModule(), {}
    images = torch.stack([datamodule.preprocess(load_image(r.path)) for r in read_boostcamp_eval(boostcamp_root)])
    for target, names in HEADS.items():
        task = make_task(class_names=names, target=target)
        probs[target] = task.probabilities(images)["label"].detach()
        predict_into(writer, task, datamodule)
    with writer.finish().open() as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["ImageID", "ans"]
    assert [int(r[1]) for r in rows[1:]] == combine_mask_gender_age(probs).argmax(1).tolist()


def test_folder_predictions_have_path_label_probability(boostcamp_root, tmp_path):
    task = make_task(class_names=CLASS_NAMES, heads=True)
    out = predict_files(task, FakeDataModule(), boostcamp_root / "train" / "images", tmp_path / "out")
    with out.open() as fh:
        rows = list(csv.DictReader(fh))
    assert out.name == "predictions.csv" and len(rows) == 4 * 7
    assert all(r["label"] in CLASS_NAMES and 0 < float(r["probability"]) <= 1 for r in rows)


def test_export_spec_is_a_single_image_classifier():
    spec = make_task(class_names=("no", "yes"), threshold=0.3).export_spec()
    (probs,) = spec.module(spec.inputs["image"])
    assert probs.shape == (2, 2) and spec.output_names == ["probabilities"]
    assert spec.outputs[0].threshold == 0.3 and spec.outputs[0].classes == ["no", "yes"]
    assert spec.outputs[0].activation == "softmax" and spec.dynamic_axes()["image"] == {0: "batch"}
    multi = make_task(class_names=CLASS_NAMES, heads=True).export_spec()
    outputs = multi.module(multi.inputs["image"])
    assert [o.shape[1] for o in outputs] == [18, 3, 2, 3] and multi.output_names[0] == "probabilities"
    assert multi.outputs[0].threshold is None and multi.output_names[1:] == ["mask_probabilities", "gender_probabilities",
                                                                            "age_probabilities"]
    assert multi.outputs[2].threshold == 0.5 and multi.outputs[2].classes == ["male", "female"]
