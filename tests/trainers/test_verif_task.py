"""Tests for the metric-learning task: live fake term, frozen val threshold at test, pairs CSV, export."""

import csv
import json
import re

import pytest
import torch
from conftest import compose_config, predict_files
from PIL import Image

from pipeline.data.formats.verification import read_pair_scores, write_pairs_csv
from pipeline.data.synthetic.verification import generate_verification
from pipeline.delivery.answers import Embeddings
from pipeline.metrics.verification import verification_metrics
from pipeline.runs.folder import best_checkpoint
from pipeline.runs.run import build_datamodule, build_task
from pipeline.trainers.engine import native_bf16, train
from pipeline.trainers.metric_learning import MetricLearningTask

TINY = ["data.passes=1", "trainer.max_epochs=2", "hyp.batch_size=12", "data.images_per_identity=3",
        "trainer.log_every_n_steps=1", "callbacks.verification_report.projector_size=12", "data.split.val=0.25", "data.split.test=0.25"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("faces")
    return generate_verification(root, num_identities=16, images_per_identity=3, fakes_per_identity=2, image_size=32)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, data_root):
    out = tmp_path_factory.mktemp("runs") / "run"
    train(compose_config(["experiment=face_verification", f"data.root={data_root}", *TINY], out))
    return out


def _config(tmp_path, data_root, *extra):
    return compose_config(["experiment=face_verification", f"data.root={data_root}", *TINY, *extra], tmp_path / "run")


def test_roc_det_figures_mark_the_logged_eer_of_the_tested_epoch(run_dir):
    """The EER points of val (best epoch) and test figures are the logged eer_real and eer_fake."""
    results = run_dir / "results"
    ckpt = torch.load(best_checkpoint(run_dir), map_location="cpu", weights_only=True)
    history = {row["epoch"]: row for row in json.loads((results / "metrics_history.json").read_text())}
    test = json.loads((results / "test_metrics.json").read_text())
    for stage, logged in (("val", history[ckpt["epoch"]]), ("test", test)):
        info = Image.open(results / f"{stage}_roc_det.png").info
        assert info["Title"] == f"{stage} (epoch {ckpt['epoch']})"
        shown = dict(re.findall(r"(real negatives|fakes): EER ([0-9.]+) at", info["Description"]))
        assert float(shown["real negatives"]) == pytest.approx(logged[f"{stage}/eer_real"], abs=1e-4)
        assert float(shown["fakes"]) == pytest.approx(logged[f"{stage}/eer_fake"], abs=1e-4)


def test_fake_term_is_live_in_the_training_step(tmp_path, data_root):
    # Without the identity head the loss is exactly the real plus the fake term.
    cfg = _config(tmp_path, data_root, "hyp.identity_head_weight=0.0")
    datamodule = build_datamodule(cfg)
    batch = next(iter(datamodule.train_dataloader()))
    batch["is_fake"] = torch.arange(len(batch["label"])) % 3 == 2  # two reals and a fake per identity
    task = build_task(cfg, datamodule.info)
    out = task.model_step(batch)
    loss, real, fake = (out[k].item() for k in ("loss", "loss_real", "loss_fake"))
    assert fake > 0 and loss == pytest.approx(real + fake, rel=1e-5)
    out["loss_fake"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in task.net.parameters())
    without = build_task(_config(tmp_path, data_root, "hyp.loss.lambda_fake=0.0", "hyp.identity_head_weight=0.0"),
                         datamodule.info)
    without.load_state_dict(task.state_dict())
    assert float(without.model_step(batch)["loss"]) == pytest.approx(real, rel=1e-5)


def test_run_freezes_the_val_threshold_and_writes_outputs(run_dir):
    results = run_dir / "results"
    threshold = json.loads((results / "threshold.json").read_text())["threshold"]
    ckpt = torch.load(best_checkpoint(run_dir), map_location="cpu", weights_only=True)
    assert ckpt["state_dict"]["threshold"].item() == pytest.approx(threshold)
    assert ckpt["verification"] == {"threshold": pytest.approx(threshold), "metric": "cosine"}
    test = json.loads((results / "test_metrics.json").read_text())
    assert test["test/threshold"] == pytest.approx(threshold)
    for key in ("test/eer_real", "test/eer_fake", "test/eer_real_fnr", "test/fnmr_at_fmr_1e-3", "test/far_fake", "test/frr"):
        assert key in test
    history = json.loads((results / "metrics_history.json").read_text())
    assert {"val/eer_real", "val/eer_fake", "val/eer_mean", "train/loss_fake_epoch"} <= set(history[-1])
    for name in ("val_score_histograms", "val_embeddings_pca", "test_score_histograms", "test_embeddings_pca"):
        assert (results / f"{name}.png").stat().st_size > 1000
    assert list((run_dir / "tensorboard").rglob("projector_config.pbtxt"))


def test_test_metrics_use_the_frozen_threshold(run_dir, data_root, tmp_path):
    task = MetricLearningTask.load_from_checkpoint(best_checkpoint(run_dir), map_location="cpu")
    # The run's memory format too (hyp.channels_last, applied in setup): NHWC and NCHW kernels round bf16 differently,
    # and this tiny model's similarities lie within 1e-3 of the threshold, a few pairs within 1e-5.
    task.setup("test")
    datamodule = build_datamodule(_config(tmp_path, data_root))
    # The test loader's own batches: a conv kernel may round differently for another batch size, and a
    # similarity that moves by 1e-7 across the threshold would change FRR/FAR by a whole pair.
    batches = list(datamodule.test_dataloader())
    # The run tested under trainer.precision=auto: bf16 autocast where this CPU computes bfloat16 natively.
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=native_bf16("cpu")):
        embeddings = torch.cat([task.eval()(batch["image"]).float() for batch in batches])
    labels, is_fake = (torch.cat([batch[key] for batch in batches]) for key in ("label", "is_fake"))
    expected = verification_metrics(embeddings, labels, is_fake, threshold=float(task.threshold))
    test = json.loads((run_dir / "results" / "test_metrics.json").read_text())
    for key in ("frr", "far_real", "far_fake", "eer_real"):
        assert test[f"test/{key}"] == pytest.approx(expected[key], abs=1e-6)


def test_prediction_scores_consecutive_rows(run_dir, data_root, tmp_path):
    task = MetricLearningTask.load_from_checkpoint(best_checkpoint(run_dir), map_location="cpu")
    datamodule = build_datamodule(_config(tmp_path, data_root))
    images = data_root / "images"
    same, other = "0000/0.JPG", "1/1.jpg"
    pairs = [({"path": f"images/{same}"}, {"path": str(images / same)}), ({"path": f"images/{same}"}, {"path": f"images/{other}"})]
    write_pairs_csv(data_root / "pairs.csv", pairs)
    plain = read_pair_scores(predict_files(task, datamodule, data_root / "pairs.csv", tmp_path / "a"))
    assert plain["pair_id"].tolist() == [0, 1] and set(plain) == {"pair_id", "similarity"}
    assert plain["similarity"][0] == pytest.approx(1.0, abs=1e-5) and plain["similarity"][1] < 1.0
    decided = read_pair_scores(predict_files(task, datamodule, data_root / "pairs.csv", tmp_path / "b", with_decision=True))
    threshold = float(task.threshold)
    assert decided["threshold"].tolist() == pytest.approx([threshold] * 2)
    assert decided["same"].tolist() == (decided["similarity"] >= threshold).tolist()


def test_prediction_of_named_pairs_keeps_their_paths_and_unusable_rows(run_dir, data_root, tmp_path):
    task = MetricLearningTask.load_from_checkpoint(best_checkpoint(run_dir), map_location="cpu")
    datamodule = build_datamodule(_config(tmp_path, data_root))
    same, other = data_root / "images" / "0000" / "0.JPG", data_root / "images" / "1" / "1.jpg"
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    (tmp_path / "pairs.csv").write_text(f"path1,path2\n{same},{same}\n{same},{other}\n{same},{broken}\n")
    with open(predict_files(task, datamodule, tmp_path / "pairs.csv", tmp_path / "out"), newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(row["path1"], row["path2"]) for row in rows] == [(str(same), str(same)), (str(same), str(other)), (str(same), str(broken))]
    assert float(rows[0]["similarity"]) == pytest.approx(1.0, abs=1e-5) and rows[0]["same"] == "1"
    assert float(rows[1]["similarity"]) < 1.0
    assert rows[1]["same"] == str(int(float(rows[1]["similarity"]) >= float(task.threshold)))
    assert rows[2]["similarity"] == "" and rows[2]["same"] == "unreadable"


def test_export_spec_is_a_normalised_embedding_with_the_threshold(run_dir):
    task = MetricLearningTask.load_from_checkpoint(best_checkpoint(run_dir), map_location="cpu").eval()
    spec = task.export_spec()
    image = spec.inputs["image"]
    with torch.no_grad():
        out = spec.module(image.repeat(3, 1, 1, 1))
    assert out.shape == (3, 64) and torch.allclose(out.norm(dim=1), torch.ones(3), atol=1e-5)
    assert spec.metadata["metric"] == "cosine" and spec.outputs[0].threshold == pytest.approx(float(task.threshold))
    assert spec.answer is Embeddings and spec.dynamic_axes()["image"] == {0: "batch"}
