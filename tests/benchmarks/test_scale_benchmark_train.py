"""bin/benchmark.py train: framework and the plain decode-once loop end to end, figures in a table and JSON."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import time

import numpy as np
import pytest
import torch
from conftest import run_cli, run_main

from pipeline.benchmarks.plain_loop import augmented_batches, batches, matmul_peak, rates, step_flops
from pipeline.benchmarks.train import (
    SIDES,
    TrainingTotals,
    Turns,
    median_ratios,
    print_table,
    process_context,
    ratios,
    run_order,
    start_side,
)

TINY_FOLDER = ["experiment=image_folder", "trainer.max_epochs=2", "hyp.batch_size=8", "data.image_size=[16,16]",
               "data.synthetic.num_people=12", "data.num_workers=0", "trainer.log_every_n_steps=1"]


@pytest.mark.slow  # three trainings, ~40 s on 2 shared cores
def test_benchmark_trains_both_loops_to_the_end_and_writes_their_ratios(tmp_path):
    out = tmp_path / "bench.json"
    began = time.perf_counter()
    proc = run_cli("benchmark.py", "train", *TINY_FOLDER, f"paths.data_dir={tmp_path / 'data'}", f"out={out}")
    elapsed = time.perf_counter() - began
    assert proc.returncode == 0, proc.stderr[-3000:]
    written = json.loads(out.read_text())
    framework, plain, tuned = written["framework"], written["plain"], written["tuned"]
    # The sides ran at once, taking turns epoch by epoch (the default): each side's wall time leaves out the others'
    # turns, so the three add up to less than the command took (each would span nearly all of it otherwise).
    assert written["interleave"] == "epochs"
    assert framework["wall_s"] + plain["wall_s"] + tuned["wall_s"] < elapsed
    for figures in (framework, plain, tuned):
        assert figures["wall_s"] > 0 and figures["train_samples_per_sec"] > 0
        # CPU seconds over the same span: at least some of it, at most every core all the time
        assert 0 < figures["cpu_s"] <= figures["wall_s"] * (os.cpu_count() or 1) * 1.05
        assert figures["busy_cores"] == pytest.approx(figures["cpu_s"] / figures["wall_s"])
        assert 0 <= figures["data_wait_share"] < 1 and 0 <= figures["test_acc"] <= 1
        # The phases lie inside the wall time, with the training steps between them.
        phases = [figures[key] for key in ("before_training_s", "validation_s", "after_training_s")]
        assert figures["before_training_s"] > 0 and figures["validation_s"] > 0 and figures["after_training_s"] >= 0
        assert sum(phases) < figures["wall_s"]
    assert plain["after_training_s"] == tuned["after_training_s"] == 0.0  # nothing after the loop's last epoch
    assert framework["after_training_s"] > 0  # the figures and reports drawn when training ends
    assert "of it in validation passes (s)" in proc.stdout
    assert written["framework_over_plain"]["wall_time"] == pytest.approx(framework["wall_s"] / plain["wall_s"])
    assert written["framework_over_tuned"]["cpu_time"] == pytest.approx(framework["cpu_s"] / tuned["cpu_s"])
    assert "CPU time to end of training" in proc.stdout
    assert framework["test_acc"] == pytest.approx(framework["test_metrics"]["test/acc"])
    assert written["epochs"] == 2 and written["batch_size"] == 8 and written["experiment"] == "image_folder"
    assert "train img/s" in proc.stdout and "plain loop" in proc.stdout
    assert written["channels_last"] is True and written["precision"] in ("bf16-mixed", "32-true")  # auto, resolved
    assert written["framework_over_tuned"]["wall_time"] == pytest.approx(framework["wall_s"] / tuned["wall_s"])
    style = f"{written['precision']}, NHWC"
    assert f"framework: {style}; plain loop: 32-true, NCHW; tuned loop: {style}" in proc.stdout
    # The same network and batch: one training step's FLOPs per item agree between the loops.
    assert plain["step_flops_per_item"] == pytest.approx(tuned["step_flops_per_item"]) and plain["step_flops_per_item"] > 0
    flops = written["flops"]
    share = flops["tuned"]["achieved_flops"] / flops["matmul_peak_flops"][written["precision"]]
    assert flops["tuned"]["share_of_peak"] == pytest.approx(share)
    assert flops["tuned"]["achieved_flops"] == pytest.approx(tuned["step_flops_per_item"] * tuned["train_samples_per_sec"])


def test_rates_and_batches_of_the_plain_loop():
    figures = rates({"samples": 30, "wait_s": 1.0, "compute_s": 2.0}, wall_s=5.0)
    assert figures == {"wall_s": 5.0, "train_samples_per_sec": 10.0, "data_wait_share": pytest.approx(1 / 3)}
    data = {"image": torch.arange(10), "label": torch.arange(10) * 2}
    kept = list(batches(data, 4, torch.arange(10), drop_last=True))
    assert [b["image"].tolist() for b in kept] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert kept[1]["label"].tolist() == [8, 10, 12, 14]
    assert len(list(batches(data, 4, torch.arange(10), drop_last=False))) == 3


def test_the_plain_loop_augments_each_item_with_the_training_transform():
    import albumentations as A
    from albumentations.pytorch import ToTensorV2

    images = [np.full((2, 3, 3), i, dtype=np.uint8) for i in range(5)]
    images[0][:, 0] = 200  # a left column that the flip moves
    labels = {"label": torch.arange(5) * 10}
    flip = A.Compose([A.HorizontalFlip(p=1.0), ToTensorV2()])
    kept = list(augmented_batches(images, labels, flip, 2, torch.tensor([4, 0, 3, 1, 2]), drop_last=True))
    assert [b["label"].tolist() for b in kept] == [[40, 0], [30, 10]]
    assert kept[0]["image"].shape == (2, 3, 2, 3)
    assert kept[0]["image"][1, 0, :, 2].tolist() == [200, 200]  # item 0 flipped: its left column now on the right
    assert images[0][0, 0, 0] == 200  # the decoded image itself is left as it is, for the next epoch


def test_the_plain_loop_hands_over_before_the_middle_batch_and_leaves_the_wait_out_of_its_clock():
    """``pause()`` comes once an epoch, before its middle batch (13 batches: the 7th, as the framework's ``Pause``
    with ``middle_batch``), and the seconds it returns are neither data wait nor compute."""
    from pipeline.benchmarks.plain_loop import middle_batch, train_epoch

    class Task(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(4, 1)

        def model_step(self, batch):
            return {"loss": self.linear(batch["image"]).square().mean()}

    task = Task()
    data = {"images": [np.zeros(4, dtype=np.float32) for _ in range(420)], "labels": {"label": torch.zeros(420)},
            "transform": lambda image: {"image": torch.from_numpy(image)}}
    clock = {"samples": 0, "wait_s": 0.0, "compute_s": 0.0}
    seen = []

    def pause() -> float:  # the others' turns, timed as ``Turns.pause`` times them
        seen.append(clock["samples"])
        began = time.perf_counter()
        time.sleep(0.3)
        return time.perf_counter() - began

    step = {"optimizer": torch.optim.SGD(task.parameters(), lr=0.1), "schedule": None, "dtype": None, "scaler": None}
    began = time.perf_counter()
    waited = train_epoch(task, data, 32, True, step, torch.Generator().manual_seed(0), torch.device("cpu"), clock, pause)
    took = time.perf_counter() - began
    assert waited >= 0.3 and seen == [6 * 32] and middle_batch(13) == 6 and middle_batch(float("inf")) == 0
    assert clock["samples"] == 13 * 32
    # neither data wait nor compute holds the pause: together they are the epoch less at least the pause
    assert clock["wait_s"] >= 0 and 0 < clock["wait_s"] + clock["compute_s"] <= took - waited + 1e-6


def test_tasks_without_a_plain_loop_report_the_framework_alone(capsys):
    framework = {"wall_s": 3.0, "train_samples_per_sec": 9.0, "data_wait_share": 0.1, "test_acc": 0.5}
    assert ratios(framework, None) == {}
    print_table("siamese", framework, None, {}, {"precision": "32-true", "channels_last": True})
    assert "framework figures alone" in capsys.readouterr().out


def test_cli_needs_a_benchmark_name():
    proc = run_main("benchmark.py")
    assert proc.returncode == 2 and proc.stderr.startswith("error: ")


def test_step_flops_count_the_forward_and_backward_of_a_linear_layer():
    class Linear(torch.nn.Module):  # model_step as the tasks have it
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Linear(8, 4, bias=False)

        def model_step(self, batch):
            return {"loss": self.net(batch["image"]).sum()}

    task = Linear()
    flops = step_flops(task, {"image": torch.randn(5, 8)}, torch.device("cpu"), None)
    # forward 2*5*8*4, backward: the weight gradient (2*5*4*8); the input needs no gradient
    assert flops == 2 * 5 * 8 * 4 * 2
    assert task.net.weight.grad is None  # counted on a copy


def test_matmul_peak_is_a_positive_rate():
    assert matmul_peak(torch.device("cpu"), None, size=64, seconds=0.05) > 0


def test_repeats_report_the_median_ratio():
    runs = [{"framework_over_plain": {"wall_time": w, "train_samples_per_sec": 1 / w},
             "framework_over_tuned": {"wall_time": w + 1, "train_samples_per_sec": 2.0}} for w in (0.9, 0.5, 0.7)]
    assert median_ratios(runs) == pytest.approx({"framework_over_plain.wall_time": 0.7,
                                                 "framework_over_plain.train_samples_per_sec": 1 / 0.7,
                                                 "framework_over_tuned.wall_time": 1.7,
                                                 "framework_over_tuned.train_samples_per_sec": 2.0})
    runs[0]["framework_over_tuned"]["cpu_time"] = 1.2  # one repeat with CPU times: its own median
    assert median_ratios(runs)["framework_over_tuned.cpu_time"] == pytest.approx(1.2)
    assert median_ratios(runs[:2])["framework_over_plain.wall_time"] == pytest.approx(0.7)  # even count: the mean of two
    assert median_ratios([{"framework_over_plain": {}, "framework_over_tuned": {}}]) == {}  # a task the loop does not cover


def test_each_side_runs_once_in_each_position_over_three_repeats():
    orders = [run_order(repeat) for repeat in range(3)]
    assert orders[0] == ("plain", "tuned", "framework")  # the first repeat's plain loop warms the page cache
    for position in range(3):
        assert sorted(order[position] for order in orders) == sorted(SIDES)
    assert run_order(3) == orders[0] and all(sorted(order) == sorted(SIDES) for order in orders)


def test_repeats_must_be_a_count():
    proc = run_main("benchmark.py", "train", "repeats=0")
    assert proc.returncode == 2 and proc.stderr.strip() == "error: repeats: '0' is not a whole number >= 1", proc.stderr


def test_training_totals_split_the_run_into_phases_and_leave_the_sanity_check_before_training(monkeypatch):
    from types import SimpleNamespace

    import pipeline.benchmarks.train as bench

    clock = iter([1.0, 2.0, 3.0, 3.25, 4.0, 4.5])  # sanity start (its end reads no clock), train start, two passes
    monkeypatch.setattr(bench.time, "perf_counter", lambda: next(clock))
    totals, module = TrainingTotals(), SimpleNamespace(device=torch.device("cpu"))
    totals.on_validation_start(SimpleNamespace(sanity_checking=True), module)
    totals.on_validation_end(SimpleNamespace(sanity_checking=True), module)
    totals.on_train_start(None, module)
    for _ in range(2):
        totals.on_validation_start(SimpleNamespace(sanity_checking=False), module)
        totals.on_validation_end(SimpleNamespace(sanity_checking=False), module)
    totals.marks["last_epoch_end"] = 5.0
    assert totals.phases(start=0.5, end=6.0) == {"before_training_s": 1.5, "validation_s": 0.75, "after_training_s": 1.0}


def take_turns(turns: Turns, name: str, segments: int, log, fail: bool = False) -> None:
    """A side of ``segments`` segments, each logged as (its start, its end or None where it failed, name)."""
    turns.begin(name)
    try:
        for segment in range(segments):
            if segment:
                turns.pause()
            began = time.monotonic()  # one clock for every process of the machine
            time.sleep(0.02)
            if fail:
                log.put((began, None, name))
                raise SystemExit(3)
            log.put((began, time.monotonic(), name))
    finally:
        turns.finish()


def run_sides(turns: Turns, sides: dict[str, int], fail: str | None = None) -> list[tuple[float, float | None, str]]:
    """The segments of ``sides`` (name -> segment count) run by ``take_turns`` in processes of their own, by start."""
    context = multiprocessing.get_context("fork")
    log = context.Queue()
    processes = [context.Process(target=take_turns, args=(turns, name, count, log, name == fail)) for name, count in sides.items()]
    for process in processes:
        process.start()
    turns.start()
    for process in processes:
        process.join(timeout=60)
    return sorted(log.get(timeout=5) for _ in range(sum(sides.values()) - (sides[fail] - 1 if fail else 0)))


def test_the_sides_take_turns_one_segment_at_a_time_in_their_order():
    sides = {"plain": 3, "tuned": 1, "framework": 4}  # the tuned side finishes first: the others go on alone
    segments = run_sides(Turns(list(sides), multiprocessing.get_context("fork")), sides)
    assert [name for _, _, name in segments] == ["plain", "tuned", "framework", "plain", "framework", "plain", "framework", "framework"]
    # Never two at once: every segment ends before the next one begins.
    assert all(end <= after for (_, end, _), (after, _, _) in zip(segments, segments[1:]))


def test_a_side_that_fails_hands_over_and_the_others_finish():
    sides = {"plain": 2, "tuned": 2, "framework": 2}
    segments = run_sides(Turns(list(sides), multiprocessing.get_context("fork")), sides, fail="tuned")
    assert [(name, end is not None) for _, end, name in segments] == [
        ("plain", True), ("tuned", False), ("framework", True), ("plain", True), ("framework", True)]


def test_a_sides_wait_for_its_turn_is_left_out_of_the_process_clock(monkeypatch):
    """``Turns.wait`` reports the seconds it blocked to ``pipeline.utils.clock``, so that the framework's figure
    budget, ``last.ckpt`` interval and throughput clock leave the other sides' turns out."""
    import threading

    from pipeline.utils import clock

    monkeypatch.setattr("pipeline.utils.clock._paused_s", 0.0)
    turns = Turns(["framework"], multiprocessing.get_context("fork"))
    threading.Timer(0.2, turns.start).start()
    before = clock.now()
    turns.begin("framework")  # blocks until the timer gives the first turn
    assert clock._paused_s >= 0.2
    assert clock.now() - before < 0.1  # the 0.2 s spent blocked did not pass on the process's own clock


def test_sides_are_spawned_and_log_as_the_command_does():
    """A forked side inherited the parent's OpenMP thread pool, half there: after the parent had trained (the test
    suite's in-process runs) its first parallel region waited forever. Spawned sides start clean, and get the command's
    logging setup from the pool's initializer."""
    from concurrent.futures import ProcessPoolExecutor

    context = process_context()
    assert context.get_start_method() == "spawn"
    setup = {"version": 1, "root": {"level": "DEBUG", "handlers": []}}
    with ProcessPoolExecutor(max_workers=1, mp_context=context, initializer=start_side, initargs=(None, setup)) as pool:
        assert pool.submit(logging.getLogger().getEffectiveLevel).result() == logging.DEBUG
