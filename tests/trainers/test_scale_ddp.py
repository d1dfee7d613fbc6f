"""DDP from the command line: 2 CPU processes (gloo) train the same model as 1 process with the same global batch."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import TINY_SIAMESE, compose_config, run_cli, run_main

from pipeline.metrics.detection import DetectionMetrics
from pipeline.metrics.verification import EmbeddingCollector, verification_metrics
from pipeline.runs.run import build_datamodule, build_task

# A model whose output for one sample does not depend on the rest of the batch: BatchNorm statistics
# are per rank (SyncBatchNorm needs GPUs), so the framework's small CNN with GroupNorm; dropout off
# (masks differ per rank); SGD, because Adam divides by the gradient's magnitude and so inflates float
# noise where it is ~0.
# The model must learn (36 steps: test AUROC ~0.98, the fewest steps tried that clear 0.9), and it trains in float64: float32 sums reduced in
# another order across 2 processes differ by ~1e-7, a learning CNN amplifies that to ~1e-3 in weights
# within 16 steps, and scores of near-tied pairs then reorder differently on different CPUs (an
# untrained model moved AUROC by 1.2e-4). In float64 the same noise stays ~1e-12, so the comparison
# tests the DDP logic, not the CPU's rounding.
SAME_MODEL = [*TINY_SIAMESE, "data.train_size=384", "data.val_size=128", "data.test_size=128", "trainer.max_epochs=3",
              "hyp=sgd_cosine", "trainer.precision=64-true", "model.head.dropout=0", "+model.kwargs={norm: group}"]
DDP = ["trainer=ddp", "trainer.devices=2", "data.batch_size=16"]
TOLERANCE = 1e-5


def _train(results: Path, *extra: str, in_process: bool = False) -> Path:
    """A run through bin/train.py: in a process of its own (DDP starts its second rank from that command line), or
    its main() in this one (the single-process reference, sparing an interpreter's imports)."""
    proc = (run_main if in_process else run_cli)("train.py", f"paths.results_dir={results}", *SAME_MODEL, *extra)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = sorted((results / "siamese_shapes").iterdir())
    assert len(runs) == 1, f"one run folder expected, got {runs}"
    return runs[0]


def _state(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, Path]:
    single = _train(tmp_path_factory.mktemp("single"), in_process=True)
    ddp = _train(tmp_path_factory.mktemp("ddp"), *DDP)
    return single, ddp


def test_ddp_trains_the_same_model(runs):
    single, ddp = (_state(run) for run in runs)
    assert single["global_step"] == ddp["global_step"] == 36
    for key, value in single["state_dict"].items():
        torch.testing.assert_close(ddp["state_dict"][key].float(), value.float(), rtol=TOLERANCE, atol=TOLERANCE, msg=key)


def test_ddp_metrics_equal_single_process(runs):
    single, ddp = (json.loads((run / "results" / "metrics.json").read_text()) for run in runs)
    assert single["test"]["test/auroc"] > 0.9, "the model must learn, or near-tied scores make metrics fragile"
    # Threshold metrics strictly between 0 and 1: evaluation is sharded, and each rank's share gives its own
    # value, so metrics computed per rank (not gathered) could not match the single process.
    assert 0 < single["test"]["test/recall"] < 1 and 0 < single["fit"]["val/recall"] < 1
    for stage in ("fit", "test"):
        for key, value in single[stage].items():
            if key.startswith(("val/", "test/")):
                assert ddp[stage][key] == pytest.approx(value, abs=TOLERANCE), key
    history = json.loads((runs[1] / "results" / "metrics_history.json").read_text())
    assert [row["epoch"] for row in history] == [0, 1, 2]


def test_only_rank_zero_writes_the_run_folder(runs):
    _, ddp = runs
    assert (ddp / ".hydra" / "config.pickle").is_file()
    assert not list(ddp.glob("*/*rank*")), "no per-rank files"
    (log,) = ddp.glob("*.log")
    assert log.name == "train.log"


@pytest.mark.slow
def test_ddp_resume_continues_in_the_same_folder(tmp_path):
    results = tmp_path / "results"
    run = _train(results, *DDP, "trainer.max_epochs=1", "data.train_size=512")  # 16 steps an epoch
    assert _state(run)["epoch"] == 0
    proc = run_cli("train.py", f"resume={run}", "trainer.max_epochs=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted((results / "siamese_shapes").iterdir()) == [run]
    assert _state(run)["epoch"] == 1 and _state(run)["global_step"] == 32
    assert "Initializing distributed: GLOBAL_RANK: 1" in proc.stdout + proc.stderr


def _scores(n: int = 101) -> tuple[torch.Tensor, torch.Tensor]:
    """Overlapping scores of an imperfect model: every rank's share gives its own metric values."""
    generator = torch.Generator().manual_seed(0)
    target = (torch.rand(n, generator=generator) < 0.45).long()
    preds = (0.35 + 0.3 * target + 0.25 * torch.randn(n, generator=generator)).clamp(0, 1)
    return preds, target


def _gather_worker(rank: int, world: int, port: int, cfg, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        metrics = build_task(cfg, build_datamodule(cfg).info).test_metrics
        preds, target = _scores()
        metrics.update(preds[rank::world], target[rank::world])  # uneven shards: 51 and 50 items
        values = {k: v.item() for k, v in metrics.compute().items()}
        if rank == 0:
            torch.save(values, out)
    finally:
        dist.destroy_process_group()


def test_task_metrics_gather_across_processes(tmp_path, data_dir):
    """The task's own test metrics, updated with a different shard on each of 2 gloo processes, compute
    the single-process values over all items; a per-rank computation would give other values."""
    cfg = compose_config(["experiment=siamese_shapes", *TINY_SIAMESE], tmp_path / "run", data_dir)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    out = tmp_path / "gathered.pt"
    mp.spawn(_gather_worker, args=(2, port, cfg, str(out)), nprocs=2, join=True)
    gathered = torch.load(out, weights_only=True)

    task = build_task(cfg, build_datamodule(cfg).info)
    preds, target = _scores()
    whole = {k: v.item() for k, v in task.test_metrics(preds, target).items()}
    per_rank = []
    for rank in range(2):
        task.test_metrics.reset()
        per_rank.append({k: v.item() for k, v in task.test_metrics(preds[rank::2], target[rank::2]).items()})
    assert set(gathered) == set(whole)
    for key, value in whole.items():
        assert gathered[key] == pytest.approx(value, abs=1e-6), key
    first, second = per_rank
    assert any(abs((first[k] + second[k]) / 2 - whole[k]) > 1e-3 for k in whole), \
        "the scores must tell a gathered metric from an average of per-rank metrics"


def _detections(images: int = 9) -> tuple[list[dict], list[dict]]:
    """Per image 1-3 true boxes, found again with jitter, plus false alarms: an imperfect detector."""
    generator = torch.Generator().manual_seed(1)
    preds, targets = [], []
    for _ in range(images):
        count = int(torch.randint(1, 4, (1,), generator=generator))
        corner = torch.rand(count + 1, 2, generator=generator) * 60
        boxes = torch.cat([corner, corner + 12 + torch.rand(count + 1, 2, generator=generator) * 20], 1)
        labels = torch.randint(0, 3, (count + 1,), generator=generator)
        targets.append({"boxes": boxes[:count], "labels": labels[:count]})
        found = boxes + torch.randn(count + 1, 4, generator=generator) * 3  # the last one is a false alarm
        preds.append({"boxes": found, "scores": torch.rand(count + 1, generator=generator), "labels": labels})
    return preds, targets


def _embeddings(items: int = 31) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(2)
    identity = torch.arange(items) % 7
    embeddings = torch.nn.functional.one_hot(identity, 8).float() + 0.6 * torch.randn(items, 8, generator=generator)
    return embeddings, identity, torch.arange(items) % 5 == 4, torch.arange(items)


def _shard(values, rank: int, world: int):
    """The contiguous, uneven share of rank ``rank``, as evaluation shards are."""
    bounds = torch.arange(len(values)).tensor_split(world)[rank]
    return values[int(bounds[0]) : int(bounds[-1]) + 1]


def _evaluation_states(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        detection = DetectionMetrics(["a", "b", "c"])
        detection.update(*(_shard(part, rank, world) for part in _detections()))  # 5 and 4 images
        collector = EmbeddingCollector()
        collector.update(*(_shard(part, rank, world) for part in _embeddings()))  # 16 and 15 items
        gathered = {"detection": detection.compute(), "embeddings": collector.compute()}
        if rank == 0:
            torch.save(gathered, out)
    finally:
        dist.destroy_process_group()


def test_detections_and_embeddings_gather_from_uneven_shards(tmp_path):
    """Detections (COCO mAP, P/R/F1) and embeddings (EER) from 2 gloo processes holding contiguous shards of
    different sizes give the single-process metrics (torchmetrics' own gathering pairs images up by position)."""
    out = tmp_path / "gathered.pt"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mp.spawn(_evaluation_states, args=(2, port, str(out)), nprocs=2, join=True)
    gathered = torch.load(out, weights_only=False)

    whole = DetectionMetrics(["a", "b", "c"])
    whole.update(*_detections())
    expected = whole.compute()
    assert 0.1 < expected["map_50"] < 0.99 and 0 < expected["recall"] < 1
    assert gathered["detection"] == pytest.approx(expected, abs=1e-9)
    first = DetectionMetrics(["a", "b", "c"])
    first.update(*(_shard(part, 0, 2) for part in _detections()))
    assert first.compute()["map"] != pytest.approx(expected["map"], abs=1e-3), "a rank's share alone scores otherwise"

    embeddings, identity, is_fake, _ = _embeddings()
    epoch = gathered["embeddings"]
    assert torch.equal(epoch["index"], torch.arange(len(identity)))
    assert verification_metrics(epoch["embeddings"], epoch["identity"], epoch["is_fake"]) == \
        pytest.approx(verification_metrics(embeddings, identity, is_fake), abs=1e-9)


# One tiny experiment per task family; the model trains a few steps so that its metrics are neither 0 nor 1.
FAMILIES = {
    "classification": (["experiment=image_folder", "data.image_size=[32,32]", "data.synthetic.num_people=20",
                        "data.synthetic.image_size=[32,24]"], 10),
    "verification": (["experiment=face_verification", "data.image_size=32", "data.synthetic.num_identities=24",
                      "data.synthetic.images_per_identity=3", "data.synthetic.fakes_per_identity=2",
                      "data.images_per_identity=3", "hyp.batch_size=12", "data.passes=1", "callbacks.verification_report.projector_size=0"], 10),
    "detection": (["experiment=facemask_detection", "data.image_size=96", "data.synthetic.num_images=40",
                   "data.synthetic.image_size=96", "hyp.batch_size=4", "model.min_score=0.0",
                   "model.detections_per_img=20"], 6),
}


class ShardRecorder(pl.Callback):
    """Writes the validation batches each process evaluates to ``<folder>/rank<r>.json``."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def on_validation_start(self, trainer, pl_module) -> None:
        Path(self.folder, f"rank{trainer.global_rank}.json").write_text(json.dumps(trainer.val_dataloaders.batch_sampler))


def _evaluator(folder: Path, **options) -> pl.Trainer:
    return pl.Trainer(accelerator="cpu", precision="64-true", logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, use_distributed_sampler=False,
                      num_sanity_val_steps=0, default_root_dir=str(folder), **options)


def _evaluate(task, datamodule, folder: Path, **options) -> dict[str, float]:
    metrics = _evaluator(folder, **options).validate(task, datamodule=datamodule, verbose=False)[0]
    options.pop("callbacks", None)
    return {**metrics, **_evaluator(folder, **options).test(task, datamodule=datamodule, verbose=False)[0]}


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_sharded_evaluation_equals_single_process(family, tmp_path, data_dir):
    """One model's val and test metrics from 2 DDP processes, each scoring its own shard, equal those of one."""
    overrides, steps = FAMILIES[family]
    cfg = compose_config([*overrides, "data.num_workers=0", "+data.eval_batch_size=8"], tmp_path / "run", data_dir)
    datamodule = build_datamodule(cfg)
    task = build_task(cfg, datamodule.info)
    _evaluator(tmp_path, max_steps=steps, limit_val_batches=0).fit(task, datamodule=datamodule)
    single = _evaluate(task, datamodule, tmp_path / "single", devices=1)
    ddp = _evaluate(task, datamodule, tmp_path / "ddp", devices=2, strategy="ddp_spawn",
                    callbacks=[ShardRecorder(str(tmp_path))])
    shards = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(2)]
    assert all(shards) and sorted(i for shard in shards for b in shard for i in b) == list(range(len(datamodule.datasets["val"])))
    assert set(ddp) == set(single)
    headline = {"classification": "val/f1", "verification": "val/eer_real", "detection": "val/map_50"}[family]
    assert 0 < single[headline] < 1, "a degenerate metric would equal any per-rank value"
    for key, value in single.items():
        assert ddp[key] == pytest.approx(value, abs=TOLERANCE, nan_ok=True), key
