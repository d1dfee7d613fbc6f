"""Ranks started by torchrun or another launcher agree on rank 0's config and run folder."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import CONFIG_DIR, TINY_SIAMESE, run_cli
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from pipeline.utils.config import save_run_config
from pipeline.utils.errors import UserError
from pipeline.utils.ranks import check_launch, launched_rank_config, publish_run_config

TORCHRUN = ("-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _launched_worker(rank: int, port: int, config: str, out: str) -> None:
    # What a plain launcher sets; no torchrun agent, so rank 0 hosts the store.
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    if rank == 0:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            full = compose(config_name="train", overrides=["seed=1234"], return_hydra_config=True)
        with open_dict(full):
            hydra_node = full.pop("hydra")
        save_run_config(full, hydra_node, Path(config))
        publish_run_config(Path(config))
    else:
        cfg = launched_rank_config()
        Path(out).write_text(json.dumps({"seed": cfg.seed, "env": os.environ["PIPELINE_RUN_CONFIG"]}))
    # The process group Lightning creates later rendezvouses at the same address: it must not clash.
    dist.init_process_group("gloo")
    try:
        total = torch.tensor([rank + 1])
        dist.all_reduce(total)
        assert int(total) == 3
    finally:
        dist.destroy_process_group()


def test_launched_ranks_take_rank_zero_config(tmp_path):
    config, out = tmp_path / "run", tmp_path / "rank1.json"
    mp.spawn(_launched_worker, args=(_free_port(), str(config), str(out)), nprocs=2, join=True)
    assert json.loads(out.read_text()) == {"seed": 1234, "env": str(config)}


def test_launch_size_must_match_the_trainer(monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29500")
    check_launch({"devices": 2, "num_nodes": 1})
    with pytest.raises(UserError, match="trainer.devices: 1 x trainer.num_nodes 1 processes, but the launcher started 2"):
        check_launch({"devices": 1, "num_nodes": 1})
    monkeypatch.setenv("WORLD_SIZE", "1")
    check_launch({"devices": 1, "num_nodes": 1})


def _last_state(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


@pytest.mark.slow
def test_torchrun_launch_writes_one_run_folder_and_resumes_in_it(tmp_path):
    results = tmp_path / "results"
    proc = run_cli("train.py", "trainer=torchrun", f"paths.results_dir={results}", *TINY_SIAMESE, "trainer.max_epochs=1",
                   "data.batch_size=16", launcher=TORCHRUN)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = (results / "siamese_shapes").iterdir()
    # 256 training pairs in batches of 16: 8 steps when 2 ranks share them, 16 for one process.
    assert _last_state(run)["global_step"] == 8
    assert "test/acc" in json.loads((run / "results" / "metrics.json").read_text())["test"]
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in proc.stdout + proc.stderr

    proc = run_cli("train.py", "resume=latest", f"paths.results_dir={results}", "trainer.max_epochs=2", launcher=TORCHRUN)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert list((results / "siamese_shapes").iterdir()) == [run]
    assert _last_state(run)["epoch"] == 1 and _last_state(run)["global_step"] == 16
