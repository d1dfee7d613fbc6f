"""DDP ranks other than 0 take rank 0's config, not the command line.

With ``strategy=ddp`` Lightning re-launches the script for every other local rank with the original
argv plus ``hydra.run.dir=...``. Composing that again would draw a new timestamp (a second run
folder), re-resolve ``resume=latest`` or start a multirun sweep of its own. Instead rank 0 writes its
exact config (the run's ``.hydra/config.yaml`` and ``hydra.yaml``) and names the run in
``PIPELINE_RUN_CONFIG``; the children inherit the variable and train with that config, in rank 0's run folder.

Ranks started by ``torchrun`` (or any launcher that sets ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and
``MASTER_PORT``) inherit nothing from rank 0: they wait for it to name that file in the key-value store
of the launch (torchrun's own store, or the one rank 0 hosts at ``MASTER_ADDR:MASTER_PORT``, which the
process group Lightning creates later shares), on every node; the results folder must be one that all
nodes see, as checkpoints already require.

Tasks started by SLURM's ``srun`` (one per device) get no ``RANK`` or ``WORLD_SIZE``: Lightning's
``SLURMEnvironment`` takes the ranks from ``SLURM_PROCID``, ``SLURM_LOCALID``, ``SLURM_NODEID`` and
``SLURM_NTASKS``, the address from ``MASTER_ADDR`` or the first host of ``SLURM_NODELIST``, the port from
``MASTER_PORT`` or ``SLURM_JOB_ID``. Where Lightning detects SLURM (``SLURM_NTASKS`` set, a job name other than
``bash``/``interactive``), the same variables give the launch here, so rank 0 names the run for every task
as it does for torchrun.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch.distributed as dist
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import setup_globals
from omegaconf import DictConfig, open_dict, read_write

from pipeline.runs.saved_config import load_run_config, read_run_config
from pipeline.utils.errors import UserError

RUN_CONFIG_ENV = "PIPELINE_RUN_CONFIG"
LAUNCH_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
# What Lightning's launcher (strategy=ddp) sets in the process that starts the other ranks, and we set for them.
JOB_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE", RUN_CONFIG_ENV)
_launch_store: list[dist.Store] = []  # kept open: rank 0 serves the other ranks from it


@contextmanager
def job_scope() -> Iterator[None]:
    """One training job in this process. Lightning's launcher leaves its hand-over in the environment
    (``LOCAL_RANK`` makes the next trainer believe its ranks were started already, ``MASTER_PORT`` points at
    the finished job's rendezvous, ``PIPELINE_RUN_CONFIG`` at its run) and its process group open; both end
    with the job, so that the next job of a sweep (``-m trainer=ddp``) starts its own ranks, on a new port,
    in its own run folder. A process started by a launcher keeps the variables the launcher gave it."""
    before = {key: os.environ.get(key) for key in JOB_ENV}
    try:
        yield
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def pin_run_dir(run_dir: Path) -> None:
    """Make ``hydra.run.dir`` the run's real folder: Lightning passes it to the ranks it launches, and
    resolving the ``unique_dir`` interpolation again (resumed runs, sweeps) would create an empty folder."""
    hydra_cfg = HydraConfig.get()
    with read_write(hydra_cfg), open_dict(hydra_cfg):
        hydra_cfg.run.dir = str(run_dir)


def share_with_ranks(run_dir: Path) -> None:
    """Name the run whose saved config ranks launched from this process must train with."""
    os.environ[RUN_CONFIG_ENV] = str(run_dir)


def rank_config() -> DictConfig | None:
    """On a rank > 0 launched by Lightning, the config rank 0 trains with; None otherwise."""
    path = os.environ.get(RUN_CONFIG_ENV)
    if not path or os.environ.get("LOCAL_RANK", "0") == "0":
        return None
    return load_rank_config(Path(path))


def load_rank_config(path: Path) -> DictConfig:
    """The config rank 0 saved in run folder ``path``, with Hydra's state set as rank 0's."""
    setup_globals()  # the ${hydra:...} and ${now:...} resolvers
    full = read_run_config(Path(path))
    HydraConfig.instance().set_config(full)
    cfg = copy.deepcopy(full)
    with read_write(cfg), open_dict(cfg):
        del cfg["hydra"]
    return cfg


def slurm_launch() -> bool:
    """Whether Lightning takes the ranks from SLURM (``SLURMEnvironment.detect()``: ``srun`` tasks)."""
    if "SLURM_NTASKS" not in os.environ:
        return False
    from lightning.fabric.plugins.environments import SLURMEnvironment

    return SLURMEnvironment.detect()


def launch_size() -> tuple[int, int] | None:
    """(rank, world size) when a launcher (torchrun, one that sets ``LAUNCH_ENV``, or SLURM) started several
    processes; else None."""
    if all(key in os.environ for key in LAUNCH_ENV):
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    elif slurm_launch():
        rank, world = int(os.environ.get("SLURM_PROCID", 0)), int(os.environ["SLURM_NTASKS"])
    else:
        return None
    return (rank, world) if world > 1 else None


def launch_rank() -> int | None:
    """This process's rank when a launcher started several; else None."""
    size = launch_size()
    return None if size is None else size[0]


def launch_store() -> dist.Store:
    """The launch's key-value store, as ``init_process_group``'s ``env://`` rendezvous opens it (torchrun's
    agent store, or a multi-tenant one rank 0 hosts, which Lightning's process group reuses), under our prefix."""
    if not _launch_store:
        rank, world = launch_size() or (0, 1)
        if slurm_launch() and not all(key in os.environ for key in ("MASTER_ADDR", "MASTER_PORT")):
            from lightning.fabric.plugins.environments import SLURMEnvironment

            # The address and port Lightning's process group will use (SLURM_NODELIST's first host, SLURM_JOB_ID)
            slurm = SLURMEnvironment()
            os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = slurm.main_address, str(slurm.main_port)
        store, _, _ = next(dist.rendezvous("env://", rank=rank, world_size=world))
        attempt = f"{os.environ.get('TORCHELASTIC_RUN_ID', 'launch')}/{os.environ.get('TORCHELASTIC_RESTART_COUNT', 0)}"
        _launch_store.append(dist.PrefixStore(f"pipeline/{attempt}/", store))
    return _launch_store[0]


def publish_run_config(path: Path) -> None:
    """On rank 0 of a launch: name the run whose saved config the other ranks must train with."""
    if launch_rank() != 0:
        return
    if single_process_in_slurm(load_run_config(Path(path)).trainer):
        return
    launch_store().set(RUN_CONFIG_ENV, str(path))


def single_process_in_slurm(trainer: DictConfig | dict) -> bool:
    """A one-process training (``trainer.devices=1``, one node) run in a SLURM allocation of several tasks
    without ``srun`` (the batch script itself): no launch, as Lightning validates none for it either."""
    devices, nodes = str(trainer.get("devices")), str(trainer.get("num_nodes", 1))
    return "WORLD_SIZE" not in os.environ and devices.isdigit() and nodes.isdigit() and int(devices) * int(nodes) == 1


def launched_rank_config() -> DictConfig | None:
    """On a rank > 0 of a launch, rank 0's config (waiting until rank 0 has composed it); None otherwise."""
    if not launch_rank():
        return None
    path = launch_store().get(RUN_CONFIG_ENV).decode()
    os.environ[RUN_CONFIG_ENV] = path
    return load_rank_config(Path(path))


def check_launch(trainer: DictConfig | dict) -> None:
    """A launch of WORLD_SIZE processes (SLURM: ``SLURM_NTASKS``, per node ``SLURM_NTASKS_PER_NODE`` on
    ``SLURM_NNODES``) needs ``trainer.devices x trainer.num_nodes`` to match it."""
    size = launch_size()
    if size is None or not str(trainer.get("devices")).isdigit() or single_process_in_slurm(trainer):
        return
    devices, nodes, world = int(trainer["devices"]), int(trainer.get("num_nodes", 1)), size[1]
    if "WORLD_SIZE" not in os.environ:  # SLURM: Lightning's own check would end in a traceback
        per_node, node_count = os.environ.get("SLURM_NTASKS_PER_NODE"), os.environ.get("SLURM_NNODES")
        if per_node is not None and per_node.isdigit() and int(per_node) != devices:
            raise UserError(f"trainer.devices: {devices}, but SLURM starts {per_node} tasks per node "
                            f"(SLURM_NTASKS_PER_NODE); set trainer.devices={per_node}")
        if node_count is not None and node_count.isdigit() and int(node_count) != nodes:
            raise UserError(f"trainer.num_nodes: {nodes}, but the SLURM job has {node_count} nodes (SLURM_NNODES); "
                            f"set trainer.num_nodes={node_count}")
    if devices * nodes != world:
        source = "WORLD_SIZE" if "WORLD_SIZE" in os.environ else "SLURM_NTASKS"
        raise UserError(f"trainer.devices: {devices} x trainer.num_nodes {nodes} processes, but the launcher started "
                        f"{world} ({source}); use trainer=torchrun, or set trainer.devices and trainer.num_nodes to match")
