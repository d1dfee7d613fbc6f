"""Run folders: never shared, newest found, checkpoints resolved."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor

import pytest

from pipeline.runs.folder import find_checkpoint, latest_run
from pipeline.utils.config import unique_run_dir
from pipeline.utils.errors import UserError


def test_parallel_runs_get_distinct_folders(tmp_path):
    base = str(tmp_path / "exp" / "2026-01-01_00-00-00")
    # One fresh process per call, as separate runs are (the memo is per process).
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(4, mp_context=context, max_tasks_per_child=1) as pool:
        dirs = list(pool.map(unique_run_dir, [base] * 8))
    assert len(set(dirs)) == 8
    assert unique_run_dir(base) == unique_run_dir(base), "memoised within a process"


def test_two_retests_in_one_second_from_one_process_get_their_own_folders(tmp_path, monkeypatch):
    from pipeline.runs import layout
    from pipeline.runs.run import Run

    class Frozen(layout.datetime):  # both re-tests start in the same second
        @classmethod
        def now(cls, tz=None):
            return cls(2026, 1, 1, 0, 0, 0)

    monkeypatch.setattr(layout, "datetime", Frozen)
    run = Run(tmp_path / "run", None)
    first, second = run.new_test_folder("plain").root, run.new_test_folder("plain").root
    assert first.is_dir() and second.is_dir() and first != second
    assert second.name == first.name + "_2"


def test_latest_run_orders_same_second_suffixes(tmp_path):
    for name in ("2026-01-01_00-00-00", "2026-01-01_00-00-01", "2026-01-01_00-00-01_2", "notes"):
        (tmp_path / name / ".hydra").mkdir(parents=True)
        (tmp_path / name / ".hydra" / "config.yaml").write_text("{}")
        (tmp_path / name / "checkpoints").mkdir()
        (tmp_path / name / "checkpoints" / "last.ckpt").write_bytes(b"")
    assert latest_run(tmp_path).name == "2026-01-01_00-00-01_2"
    with pytest.raises(UserError, match="no finished or started run"):
        latest_run(tmp_path / "empty")


def test_find_checkpoint_errors_name_the_run(tmp_path):
    with pytest.raises(UserError, match="ckpt: no checkpoint"):
        find_checkpoint(tmp_path, "last")
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"")
    assert find_checkpoint(tmp_path, "last").name == "last.ckpt"


@pytest.mark.parametrize("value", ["true", "[a,b]", "{a: 1}"])
def test_resume_that_is_not_a_folder_name_is_one_line_naming_resume(value):
    from pipeline.runs.resume import parse_resume_request

    with pytest.raises(UserError, match="^resume: .* is not a run; give resume=<run folder> or resume=latest"):
        parse_resume_request([f"resume={value}"])
