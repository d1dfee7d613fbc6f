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

from pipeline.runs.ranks import check_launch, launch_rank, launched_rank_config, publish_run_config
from pipeline.runs.saved_config import save_run_config
from pipeline.utils.errors import UserError

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


# Two nodes on one machine: two torchrun agents (node ranks 0 and 1, one process each) rendezvous on
# loopback, each in its own working directory with its own node-local decode cache (PIPELINE_DECODED_DIR),
# sharing the results folder and the photos. The model is tests/trainers/test_scale_ddp.py's (GroupNorm,
# float64, SGD, no dropout, no augmentation), so 2 x 8 items per step equal 1 x 16 within its tolerance.
TWO_NODE_MODEL = ["experiment=image_folder", "data.image_size=[16,16]", "data.synthetic.num_people=16",
                  "data.num_workers=0", "data.cache=disk", "data.augment=[]", "hyp=sgd_cosine", "hyp.scheduler.T_max=2",
                  "trainer.precision=64-true", "model.head.dropout=0", "+model.kwargs={norm: group}",
                  "trainer.log_every_n_steps=1"]
DDP_TOLERANCE = 1e-5  # tests/trainers/test_scale_ddp.py


def _env(**extra: str) -> dict[str, str]:
    root = Path(__file__).resolve().parents[2]
    path = os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": path, **extra}


def _slurm_port() -> tuple[str, int]:
    """A SLURM job id whose port (Lightning's SLURMEnvironment: the id's last 4 digits + 15000) is free here."""
    import random

    for _ in range(200):
        port = random.randint(15000, 24999)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        return f"77{port - 15000:04d}", port
    raise RuntimeError("no free port in 15000-24999")


LAUNCH_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR", "MASTER_PORT",
                    "NODE_RANK", "PIPELINE_RUN_CONFIG")


def _two_nodes(tmp_path: Path, *args: str, launcher: str = "torchrun") -> list:
    """The same command on two 'nodes'; their completed processes, node 0 first. ``torchrun``: two torchrun agents
    (node ranks 0 and 1); ``slurm``: ``bin/train.py`` itself with the variables ``srun`` gives a task of a 2-node
    job (one task per node), set by hand, and no MASTER_ADDR / MASTER_PORT (SLURM sets neither)."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    port = _free_port()
    job_id, _ = _slurm_port()
    procs = []
    for node in (0, 1):
        workdir = tmp_path / f"node{node}"
        workdir.mkdir(exist_ok=True)
        env = _env(PIPELINE_DECODED_DIR=str(workdir / "decoded"))
        if launcher == "torchrun":
            command = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", f"--node_rank={node}",
                       "--nproc_per_node=1", "--master_addr=127.0.0.1", f"--master_port={port}",
                       str(root / "bin" / "train.py"), *args]
        else:
            for key in [*LAUNCH_VARIABLES, *(k for k in env if k.startswith(("SLURM_", "TORCHELASTIC_")))]:
                env.pop(key, None)
            env.update(SLURM_NTASKS="2", SLURM_NTASKS_PER_NODE="1", SLURM_NNODES="2", SLURM_PROCID=str(node),
                       SLURM_LOCALID="0", SLURM_NODEID=str(node), SLURM_JOB_NAME="train", SLURM_JOB_ID=job_id,
                       SLURM_NODELIST="127.0.0.1,localhost")
            command = [sys.executable, str(root / "bin" / "train.py"), *args]
        procs.append(subprocess.Popen(command, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    done = []
    for proc in procs:
        out, err = proc.communicate(timeout=900)
        done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return done


def _cache_entries(folder: Path) -> dict[str, float]:
    """The decode-cache entries built in ``folder`` (one per split): name -> modification time."""
    if not folder.is_dir():
        return {}
    return {entry.name: entry.stat().st_mtime for entry in folder.iterdir() if entry.suffix != ".lock"}


@pytest.fixture(scope="module")
def single_process(tmp_path_factory) -> tuple[Path, Path, dict[str, float]]:
    """The reference: one process, global batch 16, 2 epochs; it also draws the synthetic photos the nodes read.
    (data folder, its run, its decode-cache entries)."""
    tmp = tmp_path_factory.mktemp("single")
    data, single = tmp / "data", tmp / "single"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PIPELINE_DECODED_DIR", str(single / "decoded"))
        proc = run_cli("train.py", *TWO_NODE_MODEL, f"paths.data_dir={data}", f"paths.results_dir={single}",
                       "hyp.batch_size=16", "trainer.max_epochs=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (reference,) = (single / "image_folder").iterdir()
    built = _cache_entries(single / "decoded")
    assert len(built) == 3, built  # train, val, test
    return data, reference, built


def _assert_equal_runs(run: Path, reference: Path) -> None:
    """Weights and val/test metrics of ``run`` equal the single-process ``reference`` within the DDP tolerance."""
    state, expected = _last_state(run), _last_state(reference)
    assert state["epoch"] == expected["epoch"] == 1 and state["global_step"] == expected["global_step"]
    for key, value in expected["state_dict"].items():
        torch.testing.assert_close(state["state_dict"][key].float(), value.float(), rtol=DDP_TOLERANCE, atol=DDP_TOLERANCE,
                                   msg=key)
    single_metrics, two_node = (json.loads((r / "results" / "metrics.json").read_text()) for r in (reference, run))
    for stage in ("fit", "test"):
        compared = [key for key in single_metrics[stage] if key.startswith(("val/", "test/"))]
        assert compared, single_metrics[stage]
        for key in compared:
            assert two_node[stage][key] == pytest.approx(single_metrics[stage][key], abs=DDP_TOLERANCE), key


@pytest.mark.slow
def test_two_nodes_on_loopback_train_one_run_as_one_process_does_and_resume_it(tmp_path, single_process):
    data, reference, built = single_process
    shared = tmp_path / "results"

    # Two nodes, 8 items per process: 1 epoch, then resume=latest to the second, two nodes again.
    common = [f"paths.data_dir={data}", f"paths.results_dir={shared}"]
    nodes = _two_nodes(tmp_path, "trainer=torchrun", *TWO_NODE_MODEL, *common, "hyp.batch_size=8", "trainer.max_epochs=1")
    for node, proc in enumerate(nodes):
        assert proc.returncode == 0, f"node {node}: {proc.stderr[-3000:]}"
    (run,) = (shared / "image_folder").iterdir()
    caches = [_cache_entries(tmp_path / f"node{node}" / "decoded") for node in (0, 1)]
    assert caches[0].keys() == caches[1].keys() == built.keys(), caches  # one build per node, of what one process builds
    assert not (data / "decoded").exists()  # nothing decoded into the shared data folder
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in nodes[1].stdout + nodes[1].stderr
    assert "WORLD_SIZE: 2" in nodes[0].stdout + nodes[0].stderr or "MEMBER: 1/2" in nodes[0].stdout + nodes[0].stderr

    nodes = _two_nodes(tmp_path, "resume=latest", "experiment=image_folder", *common, "trainer.max_epochs=2")
    for node, proc in enumerate(nodes):
        assert proc.returncode == 0, f"node {node}: {proc.stderr[-3000:]}"
    assert list((shared / "image_folder").iterdir()) == [run]
    assert [_cache_entries(tmp_path / f"node{node}" / "decoded") for node in (0, 1)] == caches  # reused, not rebuilt
    _assert_equal_runs(run, reference)


# Lightning's SLURMEnvironment reads SLURM_NTASKS, SLURM_PROCID, SLURM_LOCALID, SLURM_NODEID (ranks), SLURM_NODELIST
# (address) and SLURM_JOB_ID (port); pipeline.runs.ranks reads the same to let rank 0 name the run for both tasks.
@pytest.mark.slow
def test_two_slurm_tasks_on_loopback_train_one_run_as_one_process_does_and_resume_it(tmp_path, single_process):
    data, reference, built = single_process
    shared = tmp_path / "results"
    common = [f"paths.data_dir={data}", f"paths.results_dir={shared}"]
    ddp = ["trainer=ddp", "trainer.devices=1", "trainer.num_nodes=2"]
    nodes = _two_nodes(tmp_path, *ddp, *TWO_NODE_MODEL, *common, "hyp.batch_size=8", "trainer.max_epochs=1",
                       launcher="slurm")
    for node, proc in enumerate(nodes):
        assert proc.returncode == 0, f"task {node}: {proc.stderr[-3000:]}"
    (run,) = (shared / "image_folder").iterdir()
    caches = [_cache_entries(tmp_path / f"node{node}" / "decoded") for node in (0, 1)]
    assert caches[0].keys() == caches[1].keys() == built.keys(), caches
    assert not (data / "decoded").exists()
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in nodes[1].stdout + nodes[1].stderr
    # one epoch of 2 x 8 items per step: half the steps of the reference's two epochs of 16
    assert _last_state(run)["global_step"] == _last_state(reference)["global_step"] // 2

    nodes = _two_nodes(tmp_path, "resume=latest", "experiment=image_folder", *common, "trainer.max_epochs=2",
                       launcher="slurm")
    for node, proc in enumerate(nodes):
        assert proc.returncode == 0, f"task {node}: {proc.stderr[-3000:]}"
    assert list((shared / "image_folder").iterdir()) == [run]
    assert [_cache_entries(tmp_path / f"node{node}" / "decoded") for node in (0, 1)] == caches
    _assert_equal_runs(run, reference)


def test_slurm_tasks_are_a_launch_and_must_match_the_trainer(monkeypatch):
    for key in LAUNCH_VARIABLES:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("SLURM_NTASKS", "4")
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "2")
    monkeypatch.setenv("SLURM_NNODES", "2")
    monkeypatch.setenv("SLURM_PROCID", "3")
    monkeypatch.setenv("SLURM_JOB_NAME", "train")
    assert launch_rank() == 3
    check_launch({"devices": 2, "num_nodes": 2})
    with pytest.raises(UserError, match=r"trainer.devices: 4, but SLURM starts 2 tasks per node \(SLURM_NTASKS_PER_NODE\)"):
        check_launch({"devices": 4, "num_nodes": 1})
    with pytest.raises(UserError, match=r"trainer.num_nodes: 1, but the SLURM job has 2 nodes"):
        check_launch({"devices": 2, "num_nodes": 1})
    check_launch({"devices": 1, "num_nodes": 1})  # one process in the batch script itself: not a launch
    monkeypatch.setenv("SLURM_JOB_NAME", "interactive")  # Lightning's sign for "not a SLURM launch"
    assert launch_rank() is None
