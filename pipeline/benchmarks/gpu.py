"""GPU check: the framework's training steps on a CUDA machine, over a matrix of speed switches.

``python bin/benchmark.py gpu [photos=<class folders>] [detection_root=<VOC folder>] [steps=40] [out=<file.json>]``
(configs/benchmark_gpu.yaml). For the real-photo classification benchmark (``experiment=image_folder
data.root=<photos> model=resnet18``, 96 px) and the detection default (``experiment=facemask_detection``, on
its synthetic data or ``detection_root``), each case trains ``warmup + steps`` optimiser steps through the
framework's own datamodule, task and Lightning trainer (no validation, checkpoints or loggers), in fp32 and
bf16, with channels_last and ``torch.compile`` on and off, on 1 GPU, and with DDP over all GPUs where there
are several. After the warm-up (compilation, cuDNN autotuning, the loader's first workers) it measures over
the ``steps`` steps, synchronised at both ends:

- img/s: training images per second, all processes together;
- GPU busy share: NVML's utilisation (``torch.cuda.utilization()``, the share of sample periods in which a
  kernel ran) sampled every 50 ms, when pynvml is installed; else the share of the window's wall time covered
  by CUDA kernels in a ``torch.profiler`` trace of the window (overlapping kernels counted once). The table
  says which;
- peak memory: ``torch.cuda.max_memory_allocated`` over the case;
- data-wait share: the host's time between one step's end and the next one's start (fetching the batch,
  moving it to the device) as a share of the window.

Every case runs in its own process (``python -m pipeline.benchmarks.gpu <case.json>``, through torchrun for
DDP) with a time limit, so one that fails or hangs (a compile that breaks) is reported as such and the others
still run. ``dry_run=true`` prints the matrix without running it. On a machine without CUDA the check prints
one line saying it skipped and why, and exits 0.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from pipeline.callbacks.throughput import peak_memory_mb
from pipeline.utils.cli import run_hydra
from pipeline.utils.errors import UserError

TASKS = {
    # The real-photo classification benchmark of docs/scaling.md at 96 px, and the detection default.
    "classification": ["experiment=image_folder", "model=resnet18", "data.image_size=[96,96]"],
    "detection": ["experiment=facemask_detection"],
}
ROOT_KEY = {"classification": "photos", "detection": "detection_root"}
COLUMNS = (("img_per_s", "img/s", "{:.1f}"), ("gpu_busy_share", "GPU busy", "{:.0%}"),
           ("peak_memory_mb", "peak MB", "{:.0f}"), ("data_wait_share", "data wait", "{:.0%}"))


def skip_reason() -> str | None:
    """Why the check cannot run here, or None on a CUDA machine."""
    if not torch.cuda.is_available():
        build = f"this torch ({torch.__version__}) was built without CUDA" if torch.version.cuda is None else \
            "torch.cuda.is_available() is False (no CUDA device visible)"
        return f"GPU check skipped: {build}; run it on a machine with an NVIDIA GPU"
    return None


def as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) or OmegaConf.is_list(value) else [value]


def cases(cfg: DictConfig, gpus: int) -> list[dict[str, Any]]:
    """The configuration matrix: task x precision x channels_last x compile on 1 GPU (compile with NHWC only,
    unless ``compile_nchw``), then the same switches with DDP over ``gpus`` GPUs when there are several
    (``ddp=auto``; compile off there unless ``ddp_compile``)."""
    tasks = as_list(cfg.tasks)
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise UserError(f"tasks: unknown {unknown}; choose from {sorted(TASKS)}")
    ddp = str(cfg.ddp).lower()
    if ddp not in ("auto", "true", "false"):
        raise UserError(f"ddp: {cfg.ddp!r}; use auto (several GPUs: also DDP), true or false")
    device_counts = [1] + ([gpus] if gpus > 1 and ddp in ("auto", "true") else [])
    out = []
    for task, devices, precision, channels_last, compile_ in itertools.product(
            tasks, device_counts, as_list(cfg.precisions), as_list(cfg.channels_last), as_list(cfg.compile)):
        if compile_ and ((devices > 1 and not cfg.ddp_compile) or (not channels_last and not cfg.compile_nchw)):
            continue
        root = cfg.get(ROOT_KEY[task])
        overrides = [*TASKS[task], *([f"data.root={root}"] if root else []),
                     f"trainer.precision={precision}", f"hyp.channels_last={str(bool(channels_last)).lower()}",
                     f"hyp.compile={str(bool(compile_)).lower()}", f"data.num_workers={cfg.num_workers}",
                     *([f"hyp.batch_size={cfg.batch_size[task]}"] if cfg.batch_size.get(task) else []),
                     *as_list(cfg.overrides or [])]
        out.append({"task": task, "devices": devices, "precision": str(precision), "channels_last": bool(channels_last),
                    "compile": bool(compile_), "data": "real" if root else "synthetic", "overrides": overrides})
    return out


# --- one case, in its own process ------------------------------------------------------------------------

class Window:
    """Measures the training steps after ``warmup``: wall time (synchronised), images, host data wait, and
    the GPU's busy share while it runs. A Lightning callback (built lazily: Lightning imports stay in the case)."""

    def __init__(self, warmup: int, steps: int, device: torch.device, busy_method: str) -> None:
        self.warmup, self.steps, self.device, self.busy_method = warmup, steps, device, busy_method
        self.images, self.wait_s, self.start, self.end = 0, 0.0, 0.0, 0.0
        self.step_end = 0.0
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._sampler: threading.Thread | None = None
        self.profile: Any = None
        self.kernel_busy_s = 0.0

    def measuring(self, step: int) -> bool:
        return self.warmup <= step < self.warmup + self.steps

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def begin(self) -> None:
        self.synchronize()
        self.start = self.step_end = time.perf_counter()
        if self.busy_method == "nvml":
            self._sampler = threading.Thread(target=self._sample, daemon=True)
            self._sampler.start()
        elif self.busy_method == "profiler":
            self.profile = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA])
            self.profile.__enter__()

    def finish(self) -> None:
        self.synchronize()
        self.end = time.perf_counter()
        if self._sampler is not None:
            self._stop.set()
            self._sampler.join()
        if self.profile is not None:
            self.profile.__exit__(None, None, None)
            self.kernel_busy_s = kernel_busy_seconds(self.profile)

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            self.samples.append(float(torch.cuda.utilization(self.device)))

    def figures(self, world_size: int) -> dict[str, Any]:
        wall = self.end - self.start
        if self.busy_method == "nvml":
            busy = sum(self.samples) / len(self.samples) / 100 if self.samples else None
        else:
            busy = min(1.0, self.kernel_busy_s / wall) if self.busy_method == "profiler" and wall else None
        return {"img_per_s": self.images * world_size / wall if wall else 0.0, "gpu_busy_share": busy,
                "gpu_busy_method": self.busy_method, "peak_memory_mb": peak_memory_mb(self.device),
                "data_wait_share": self.wait_s / wall if wall else 0.0, "window_s": wall, "steps": self.steps}


def kernel_busy_seconds(profile: Any) -> float:
    """The wall time covered by at least one CUDA kernel in a profiler trace (overlaps counted once)."""
    spans = sorted((e.time_range.start, e.time_range.end) for e in profile.events()
                   if str(getattr(e, "device_type", "")).endswith("CUDA") and e.time_range.end > e.time_range.start)
    busy_us, current_start, current_end = 0.0, None, None
    for start, end in spans:
        if current_end is None or start > current_end:
            if current_end is not None:
                busy_us += current_end - current_start
            current_start, current_end = start, end
        else:
            current_end = max(current_end, end)
    if current_end is not None:
        busy_us += current_end - current_start
    return busy_us / 1e6


def busy_method(device: torch.device) -> str:
    """``nvml`` when ``torch.cuda.utilization`` can ask NVML (pynvml installed), else ``profiler``; ``none`` off CUDA."""
    if device.type != "cuda":
        return "none"
    try:
        import pynvml  # noqa: F401

        torch.cuda.utilization()
        return "nvml"
    except Exception:  # noqa: BLE001 - no pynvml, or NVML not usable: the profiler's kernel share instead
        return "profiler"


def window_callback(window: Window) -> Any:
    import lightning.pytorch as pl

    class WindowCallback(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            step = trainer.global_step
            if step == window.warmup and not window.start:
                window.begin()
            elif window.measuring(step):
                window.wait_s += time.perf_counter() - window.step_end
            if window.measuring(step):
                image = batch.get("image") if isinstance(batch, dict) else batch[0]
                window.images += len(image)

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            window.step_end = time.perf_counter()
            if trainer.global_step == window.warmup + window.steps and not window.end:
                window.finish()
                trainer.should_stop = True

    return WindowCallback()


def run_case(case: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any] | None:
    """Train one case (this process is one of its ranks); rank 0's figures, None on other ranks."""
    from hydra import compose, initialize_config_dir
    from lightning.fabric.utilities.seed import seed_everything

    from pipeline.runs.run import build_datamodule, build_task
    from pipeline.trainers.engine import build_trainer
    from pipeline.utils.config import CONFIG_DIR, register_resolvers

    register_resolvers()
    scratch = Path(settings["scratch"])
    overrides = [*case["overrides"], f"paths.results_dir={scratch / 'case_runs'}", f"paths.data_dir={scratch / 'data'}",
                 f"paths.output_dir={scratch / 'case'}", "logger=none", f"trainer.accelerator={settings.get('accelerator', 'gpu')}",
                 f"trainer.devices={case['devices']}", *(["trainer=ddp"] if case["devices"] > 1 else [])]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    seed_everything(cfg.seed, workers=True, verbose=False)
    # accelerator=cpu only for the test of this measurement (tests/benchmarks/test_scale_benchmark_gpu.py)
    if settings.get("accelerator", "gpu") == "gpu":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    window = Window(int(settings["warmup"]), int(settings["steps"]), device, busy_method(device))
    datamodule = build_datamodule(cfg)
    task = build_task(cfg, datamodule.info)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    trainer = build_trainer(cfg, callbacks=[window_callback(window)], logger=False, enable_checkpointing=False,
                            max_epochs=-1, max_steps=window.warmup + window.steps + 1, limit_val_batches=0,
                            num_sanity_val_steps=0, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(task, datamodule=datamodule)
    if not window.end:
        raise RuntimeError(f"training stopped after {trainer.global_step} steps, before the window's end")
    return window.figures(trainer.world_size) if trainer.is_global_zero else None


def case_main(case_file: str) -> None:
    """``python -m pipeline.benchmarks.gpu <case.json>``: one case; rank 0 writes its figures beside the file."""
    spec = json.loads(Path(case_file).read_text())
    figures = run_case(spec["case"], spec["settings"])
    if figures is not None:
        Path(spec["result"]).write_text(json.dumps(figures))


# --- the matrix, from the parent process -------------------------------------------------------------------

def launch(case: dict[str, Any], settings: dict[str, Any], folder: Path, index: int, timeout_s: float) -> dict[str, Any]:
    """Run one case in its own process(es); its figures, or ``error`` with the reason."""
    spec, result = folder / f"case{index}.json", folder / f"case{index}_result.json"
    spec.write_text(json.dumps({"case": case, "settings": settings, "result": str(result)}))
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={case['devices']}"] if case["devices"] > 1 \
        else []
    command = [sys.executable, *launcher, "-m", "pipeline.benchmarks.gpu", str(spec)]
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    start = time.perf_counter()
    try:
        proc = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"error": f"no result within {timeout_s:.0f} s (case_timeout_s)", "case_s": time.perf_counter() - start}
    if proc.returncode != 0 or not result.is_file():
        lines = [line for line in (proc.stderr or proc.stdout).strip().splitlines() if line.strip()]
        (folder / f"case{index}.log").write_text(proc.stdout + proc.stderr)
        return {"error": (lines[-1] if lines else f"exit {proc.returncode}")[:200], "case_s": time.perf_counter() - start}
    return {**json.loads(result.read_text()), "case_s": time.perf_counter() - start}


def label(case: dict[str, Any]) -> str:
    return (f"{case['task']} ({case['data']}), {case['devices']} GPU{'s, DDP' if case['devices'] > 1 else ''}, "
            f"{case['precision']}, {'NHWC' if case['channels_last'] else 'NCHW'}, compile {'on' if case['compile'] else 'off'}")


def print_table(rows: list[dict[str, Any]], device: str) -> None:
    from rich.console import Console
    from rich.table import Table

    methods = sorted({r["figures"].get("gpu_busy_method") for r in rows if r["figures"].get("gpu_busy_method")})
    table = Table(title=f"GPU check: {device}")
    table.add_column("case")
    for _, title, _ in COLUMNS:
        table.add_column(title, justify="right")
    table.add_column("case s", justify="right")
    for row in rows:
        figures = row["figures"]
        if "error" in figures:
            table.add_row(label(row["case"]), f"failed: {figures['error']}", "", "", "", f"{figures['case_s']:.0f}")
            continue
        table.add_row(label(row["case"]), *(fmt.format(figures[key]) if figures.get(key) is not None else "-"
                                           for key, _, fmt in COLUMNS), f"{figures['case_s']:.0f}")
    table.caption = ("GPU busy: " + " / ".join({"nvml": "NVML utilisation sampled every 50 ms",
                                                  "profiler": "share of wall time inside CUDA kernels (torch.profiler)"}[m]
                                                 for m in methods)) if methods else None
    console = Console()
    (console if console.is_terminal else Console(width=170)).print(table)


def benchmark_gpu(cfg: DictConfig) -> dict[str, Any] | None:
    """Run (or with ``dry_run``, list) the matrix; prints a table and writes the figures as JSON."""
    reason = skip_reason()
    if reason is not None and not cfg.dry_run:
        print(reason)
        return None
    gpus = torch.cuda.device_count() if reason is None else int(cfg.assume_gpus)
    matrix = cases(cfg, gpus)
    if cfg.dry_run:
        for case in matrix:
            print(f"would run: {label(case)}: {' '.join(case['overrides'])}")
        print(f"{len(matrix)} cases, {cfg.warmup} + {cfg.steps} steps each")
        return {"cases": matrix}
    device = f"{torch.cuda.get_device_name(0)} x{gpus}"
    settings = {"warmup": int(cfg.warmup), "steps": int(cfg.steps)}
    rows = []
    with tempfile.TemporaryDirectory(prefix="benchmark_gpu_") as scratch:
        settings["scratch"] = scratch  # the synthetic data and decode caches are made once, for all cases
        for index, case in enumerate(matrix):
            figures = launch(case, settings, Path(scratch), index, float(cfg.case_timeout_s))
            rows.append({"case": case, "figures": figures})
            print(f"[{index + 1}/{len(matrix)}] {label(case)}: " + (f"failed: {figures['error']}" if "error" in figures else
                  ", ".join(f"{title} {fmt.format(figures[key])}" for key, title, fmt in COLUMNS if figures.get(key) is not None)),
                  flush=True)
    report = {"device": device, "torch": torch.__version__, "cuda": torch.version.cuda, "settings": settings,
              "rows": rows}
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    out = Path(cfg.out or Path(cfg.paths.results_dir) / "benchmarks" / f"gpu_{stamp}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print_table(rows, device)
    print(f"Wrote {out}")
    return report


def main() -> None:
    """``bin/benchmark.py gpu``: the Hydra app of configs/benchmark_gpu.yaml."""
    run_hydra("benchmark_gpu", benchmark_gpu)


if __name__ == "__main__":
    case_main(sys.argv[1])
