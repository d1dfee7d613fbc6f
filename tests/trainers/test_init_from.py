"""model.init_from (runs of another task, timm / torchvision / safetensors files), the leak check, and the
fine-tuning controls (hyp.freeze_backbone_epochs, hyp.backbone_lr_mult), resumed exactly."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import timm
import torch
import torchvision
from conftest import TINY_SIAMESE, compose_config, run_main
from omegaconf import OmegaConf
from safetensors.torch import save_file

from pipeline.modules.backbones import create_backbone
from pipeline.modules.detectors import TimmFCOS
from pipeline.modules.init_weights import backbone_prefix, load_matching, read_state_dict
from pipeline.runs.run import build_datamodule, build_task
from pipeline.trainers.base import build_optimizers
from pipeline.trainers.classification import MultiHeadClassifier
from pipeline.trainers.init_from import check_leak, initialise, resolve_source
from pipeline.utils.errors import UserError

CROPS = ["experiment=facemask_crops", "model=resnet18", "data.synthetic.num_images=12", "data.num_workers=0"]
DETECTION = ["experiment=facemask_detection", "data.image_size=96", "data.synthetic.num_images=12",
             "data.synthetic.image_size=96", "data.num_workers=0", "hyp.batch_size=4"]


def _fake_run(run: Path, cfg, task) -> Path:
    """A run folder as training leaves it: its config and a Lightning checkpoint of the task."""
    (run / ".hydra").mkdir(parents=True)
    (run / "checkpoints").mkdir()
    OmegaConf.save(cfg, run / ".hydra" / "config.yaml")
    torch.save({"state_dict": task.state_dict(), "hyper_parameters": dict(task.hparams)}, run / "checkpoints" / "last.ckpt")
    return run


@pytest.fixture(scope="module")
def crops_run(tmp_path_factory, data_dir):
    """A face-crop classifier (resnet18 backbone, 3 classes) saved as a run folder, and its task."""
    tmp = tmp_path_factory.mktemp("crops")
    cfg = compose_config(CROPS, tmp / "run", data_dir)
    torch.manual_seed(1)
    task = build_task(cfg, build_datamodule(cfg).info)
    return _fake_run(tmp / "run", cfg, task), task


def test_detector_from_a_classification_run(crops_run, data_dir, tmp_path):
    """The crops classifier's backbone fills the detector's; FPN and head are missing; the classifier's
    head is unexpected; the counts come from the two networks' own state dicts."""
    run, crops = crops_run
    cfg = compose_config([*DETECTION, f"model.init_from={run}"], tmp_path / "det", data_dir)
    datamodule = build_datamodule(cfg)
    task = build_task(cfg, datamodule.info)
    record = initialise(cfg, task, datamodule, tmp_path / "det")
    body = task.net.backbone.body.state_dict()
    assert record["kind"] == "lightning checkpoint of facemask_crops"
    assert record["loaded"] == len(body) == len(crops.net.backbone.state_dict())
    assert record["parts"]["backbone"] == {"loaded": len(body), "skipped": 0, "missing": 0}
    assert record["missing"] == len(task.net.state_dict()) - len(body)
    assert record["parts"]["fpn"]["missing"] == len(task.net.backbone.fpn.state_dict())
    assert record["unexpected"] == len(crops.net.heads.state_dict())
    assert record["skipped"] == 0 and record["run"] == str(run.resolve())
    for key, value in crops.net.backbone.state_dict().items():
        assert torch.equal(body[key], value), key
    assert json.loads((tmp_path / "det" / "results" / "init_from.json").read_text()) == record


def test_other_class_count_skips_the_last_layer_only():
    """A 3-class head into a 2-class one: the hidden layer loads, the output layer is skipped (shape)."""
    torch.manual_seed(0)
    source = MultiHeadClassifier(create_backbone("simple_cnn"), {"label": 3}, [32])
    target = MultiHeadClassifier(create_backbone("simple_cnn"), {"label": 2}, [32])
    report = load_matching(target, source.state_dict(), "source", backbone_prefix=backbone_prefix(target))
    totals = report.totals()
    n_backbone = len(target.backbone.state_dict())
    assert totals == {"loaded": n_backbone + 2, "skipped": 2, "missing": 0, "unexpected": 0}
    assert report.skipped == {"heads": 2} and report.loaded == {"backbone": n_backbone, "heads": 2}
    assert torch.equal(target.heads["label"].net[0].weight, source.heads["label"].net[0].weight)
    assert not torch.equal(target.heads["label"].net[3].bias[:2], source.heads["label"].net[3].bias[:2])
    assert "skipped" in report.table() and "heads.label.net.3.weight (2, 32) <- (3, 32)" in report.table()


def test_timm_checkpoint_file(tmp_path):
    """timm's checkpoint layout ({"state_dict": ...} with a 1000-class fc) into a pooled backbone."""
    torch.manual_seed(3)
    source = timm.create_model("resnet18", num_classes=1000)
    path = tmp_path / "resnet18_timm.pth"
    torch.save({"epoch": 5, "arch": "resnet18", "state_dict": source.state_dict()}, path)
    target = MultiHeadClassifier(create_backbone("resnet18"), {"label": 3})
    state, kind = read_state_dict(path)
    report = load_matching(target, state, str(path), kind, backbone_prefix(target))
    assert kind == "checkpoint"
    assert report.totals() == {"loaded": len(source.state_dict()) - 2, "skipped": 0, "missing": 2, "unexpected": 2}
    assert torch.equal(target.backbone.layer4[1].conv2.weight, source.layer4[1].conv2.weight)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_torchvision_file_into_a_detector(tmp_path, suffix):
    """torchvision's resnet18 state dict (as resnet18-f37072fd.pth), plain or as safetensors, fills the
    detector's timm backbone; the FPN and head stay as built."""
    torch.manual_seed(4)
    source = torchvision.models.resnet18().state_dict()
    path = tmp_path / f"resnet18{suffix}"
    save_file(source, str(path)) if suffix == ".safetensors" else torch.save(source, path)
    detector = TimmFCOS(num_classes=3, backbone="resnet18", image_size=96)
    state, kind = read_state_dict(path)
    report = load_matching(detector, state, str(path), kind, backbone_prefix(detector))
    assert report.totals() == {"loaded": len(source) - 2, "skipped": 0,
                               "missing": len(detector.state_dict()) - (len(source) - 2), "unexpected": 2}
    assert torch.equal(detector.backbone.body.layer2[0].downsample[0].weight, source["layer2.0.downsample.0.weight"])


def test_prefix_and_key_map(tmp_path):
    """model.init_prefix keeps one sub-network of a file; model.init_key_map renames a project's names."""
    torch.manual_seed(5)
    backbone = create_backbone("simple_cnn")
    state = {f"student.{k}": v for k, v in backbone.state_dict().items()}
    state.update({f"teacher.{k}": torch.zeros_like(v) for k, v in backbone.state_dict().items()})
    target = MultiHeadClassifier(create_backbone("simple_cnn"), {"label": 2})
    report = load_matching(target, state, "file", prefix="student.")
    assert report.totals()["loaded"] == len(backbone.state_dict()) and report.unexpected == 0
    target = MultiHeadClassifier(create_backbone("simple_cnn"), {"label": 2})
    report = load_matching(target, state, "file", key_map={"teacher.": "backbone."})
    assert report.totals()["loaded"] == len(backbone.state_dict())
    assert all(not v.any() for k, v in target.backbone.state_dict().items() if v.is_floating_point())


def test_a_file_that_matches_nothing(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"encoder.blocks.0.attn.qkv.weight": torch.ones(3, 3)}, path)
    target = MultiHeadClassifier(create_backbone("simple_cnn"), {"label": 2})
    with pytest.raises(UserError, match="matches no tensor of this network"):
        load_matching(target, read_state_dict(path)[0], str(path))
    (tmp_path / "notes.pth").write_text("not weights")
    with pytest.raises(UserError, match="cannot read"):
        read_state_dict(tmp_path / "notes.pth")
    with pytest.raises(UserError, match="does not exist"):
        resolve_source(str(tmp_path / "absent"))
    with pytest.raises(UserError, match="not a run folder"):
        resolve_source(str(tmp_path))


def _split(path: Path, train, val, test) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"train": train, "val": val, "test": test}))
    return path


def test_leak_warns_with_the_count_or_refuses(tmp_path, caplog):
    source = tmp_path / "source"
    _split(source / "results" / "split.json", ["a", "b", "c", "d"], ["e"], ["f"])
    this = _split(tmp_path / "this" / "split.json", ["e", "f"], ["a", "x"], ["b", "c"])
    with caplog.at_level(logging.WARNING):
        assert check_leak(source, this, "warn") == 3
    assert "trained on 3 items that are in this run's val/test split" in caplog.text
    with pytest.raises(UserError, match="model.init_leak=refuse"):
        check_leak(source, this, "refuse")
    clean = _split(tmp_path / "clean" / "split.json", ["a", "b"], ["e"], ["f"])
    assert check_leak(source, clean, "refuse") == 0
    assert check_leak(tmp_path / "no_record", clean, "refuse") is None


def test_backbone_lr_mult_groups(crops_run, data_dir, tmp_path):
    """The backbone's group runs at lr x mult, also under OneCycleLR (which sets each group's max_lr)."""
    _, crops = crops_run
    cfg = compose_config([*CROPS, "hyp.backbone_lr_mult=0.1", "hyp/scheduler=onecycle"], tmp_path / "run", data_dir)
    task = build_task(cfg, crops.data_info)
    optimizer = build_optimizers(task, lambda: 100)["optimizer"]
    lr = cfg.hyp.optimizer.lr
    head, backbone = optimizer.param_groups
    assert {id(p) for p in backbone["params"]} == {id(p) for p in task.net.backbone.parameters()}
    assert len(head["params"]) == len(list(task.parameters())) - len(backbone["params"])
    assert backbone["max_lr"] == pytest.approx(0.1 * lr) and head["max_lr"] == pytest.approx(lr)


def _train(results: Path, *extra: str) -> None:
    small = {"data.train_size": "data.train_size=96", "data.val_size": "data.val_size=64"}
    tiny = [small.get(arg.split("=")[0], arg) for arg in TINY_SIAMESE]
    proc = run_main("train.py", f"paths.results_dir={results}", *tiny, "hyp.backbone_lr_mult=0.5",
                    "hyp.freeze_backbone_epochs=1", "test_after_train=false", *extra)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _checkpoint(results: Path, name: str = "last.ckpt") -> dict:
    (run,) = (results / "siamese_shapes").iterdir()
    return torch.load(run / "checkpoints" / name, map_location="cpu", weights_only=True)


def test_freeze_then_unfreeze_resumes_exactly(tmp_path, data_dir):
    """Started from a file with the encoder frozen for epoch 0: after it the encoder (BatchNorm statistics
    included) is the file's; after epoch 1 it trained; interrupted after epoch 0 and resumed, the run ends
    with the uninterrupted run's weights and optimiser state."""
    cfg = compose_config(["experiment=siamese_shapes"], tmp_path / "x")
    torch.manual_seed(11)
    encoder = create_backbone(cfg.model.backbone, **cfg.model.kwargs)
    weights = tmp_path / "encoder.pth"
    torch.save(encoder.state_dict(), weights)
    common = (f"model.init_from={weights}", f"paths.data_dir={data_dir}")
    straight, split = tmp_path / "straight", tmp_path / "split"
    _train(straight, *common, "trainer.max_epochs=2")
    _train(split, *common, "trainer.max_epochs=1", "hyp.scheduler.T_max=2")
    frozen = _checkpoint(split)
    for key, value in encoder.state_dict().items():
        assert torch.equal(frozen["state_dict"][f"net.encoder.{key}"], value), key
    (run,) = (split / "siamese_shapes").iterdir()
    _train(split, f"resume={run}", "trainer.max_epochs=2")
    a, b = _checkpoint(straight), _checkpoint(split)
    assert a["epoch"] == b["epoch"] == 1 and a["global_step"] == b["global_step"]
    for key, value in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][key], value, rtol=0, atol=1e-6, msg=key)
    trained = [k for k in encoder.state_dict() if not torch.equal(a["state_dict"][f"net.encoder.{k}"], encoder.state_dict()[k])]
    assert trained, "the encoder trains once unfrozen"
    groups_a, groups_b = a["optimizer_states"][0]["param_groups"], b["optimizer_states"][0]["param_groups"]
    assert [g["lr"] for g in groups_a] == pytest.approx([g["lr"] for g in groups_b])
    assert groups_a[1]["initial_lr"] == pytest.approx(0.5 * groups_a[0]["initial_lr"])
    metrics = json.loads((run / "results" / "metrics.json").read_text())
    assert metrics["init_from"]["source"] == str(weights.resolve()) and metrics["init_from"]["loaded"] == len(encoder.state_dict())


def test_cli_file_that_matches_nothing_is_one_line(tmp_path, data_dir):
    junk = tmp_path / "junk.pth"
    torch.save({"transformer.wte.weight": torch.ones(4, 4)}, junk)
    proc = run_main("train.py", f"paths.results_dir={tmp_path / 'results'}", f"paths.data_dir={data_dir}", *TINY_SIAMESE,
                    f"model.init_from={junk}")
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "model.init_from" in errors[0] and "Traceback" not in proc.stderr


def test_report_says_what_the_run_started_from(tmp_path):
    from pipeline.callbacks.run_report import RunReport

    record = {"source": "/w/resnet18.pth", "kind": "state dict", "loaded": 60, "skipped": 2, "missing": 40,
              "unexpected": 2, "leaked_items": 3}
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "init_from.json").write_text(json.dumps(record))
    (line, _) = RunReport(tmp_path / "results", tmp_path).init_section()
    assert line == ("Started from `/w/resnet18.pth` (state dict): 60 tensors loaded, 2 skipped (shape mismatch), "
                    "40 missing, 2 unexpected; the source trained on 3 of this run's val/test items.")
    assert RunReport(tmp_path / "other" / "results", tmp_path).init_section() == []


def test_coco_detector_from_a_local_torchvision_file(tmp_path, data_dir):
    """model=fcos_coco offline: a file in the layout of torchvision's COCO FCOS weights (91 classes, frozen
    BatchNorm: no num_batches_tracked) loads whole but for the 91-class output layer."""
    torch.manual_seed(6)
    coco = torchvision.models.detection.fcos_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91)
    source = {k: v for k, v in coco.state_dict().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "fcos_resnet50_fpn_coco.pth"
    torch.save(source, path)
    cfg = compose_config([*DETECTION, "model=fcos_coco", f"model.init_from={path}"], tmp_path / "run", data_dir)
    datamodule = build_datamodule(cfg)
    task = build_task(cfg, datamodule.info)
    record = initialise(cfg, task, datamodule, tmp_path / "run")
    assert {k: record[k] for k in ("loaded", "skipped", "missing", "unexpected")} == \
        {"loaded": len(source) - 2, "skipped": 2, "missing": 0, "unexpected": 0}
    assert record["parts"]["head"]["skipped"] == 2
    net = task.net
    assert net.head.classification_head.cls_logits.out_channels == 3
    assert torch.equal(net.backbone.body.layer3[0].conv1.weight, source["backbone.body.layer3.0.conv1.weight"])
    assert torch.equal(net.backbone.body.bn1.running_var, source["backbone.body.bn1.running_var"])
    assert torch.equal(net.head.regression_head.bbox_ctrness.weight, source["head.regression_head.bbox_ctrness.weight"])
