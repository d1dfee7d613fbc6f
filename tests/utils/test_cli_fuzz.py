"""Fuzz of the command line: wrong types and out-of-range values for the composed config's keys.

Each case runs bin/train.py's own ``main()`` in-process with one drawn ``key=value`` on top of a tiny
siamese config, up to ``Trainer.fit`` (patched to stop there): it must either reach fit or stop with
one ``error:`` line and exit code 2, never a traceback. The slow variant runs a sample as real
subprocesses, through training.
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import random
import re
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
from conftest import CONFIG_DIR, ROOT, TINY_SIAMESE, compose_config, run_cli
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, ListConfig

from pipeline.trainers.engine import train
from pipeline.utils.cli import describe_error, exit_on_user_error
from pipeline.utils.config import apply_overrides
from pipeline.utils.validation import validate_config

pytestmark = pytest.mark.usefixtures("restore_root_logging")

CASES = 200
MAIN_CASES = 8
WRONG_VALUES = ("abc", "''", "[1,2]", "[]", "{a: 1}", "-1", "0", "-7.5", "3.5", "99999999999999999999", "1e308",
                "nan", "inf", "true", "null", "-99999")
TINY_EXPERIMENTS = {
    "siamese_shapes": TINY_SIAMESE,
    "image_folder": ["data.synthetic.num_people=6", "data.num_workers=0", "hyp.batch_size=8"],
    "face_verification": ["data.synthetic.num_identities=6", "data.num_workers=0", "hyp.batch_size=6"],
    "glasses": ["data.synthetic.num_images=30", "data.num_workers=0", "hyp.batch_size=8"],
}
COMMAND_CONFIGS = ("eval", "export", "predict", "serve", "benchmark_inference", "benchmark")


class ReachedFit(BaseException):
    """Raised by the patched Trainer.fit: everything before fitting accepted the value."""


def leaf_keys(node, prefix: str = "") -> list[str]:
    """Every leaf key of a config (a list counts as one leaf)."""
    if not isinstance(node, DictConfig):
        return [prefix[:-1]]
    keys = []
    for key in node.keys():
        child = node._get_node(key)
        if child._is_missing():
            continue
        keys += leaf_keys(child, f"{prefix}{key}.") if isinstance(child, DictConfig | ListConfig) else [f"{prefix}{key}"]
    return keys


def draw_cases(keys: list[str], count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [f"{rng.choice(keys)}={rng.choice(WRONG_VALUES)}" for _ in range(count)]


def train_keys(cfg: DictConfig) -> list[str]:
    """The keys a user may type on bin/train.py (Hydra's own and the run folder's are Hydra's business)."""
    return sorted(k for k in leaf_keys(cfg) if not k.startswith(("hydra.", "paths.output_dir", "paths.root_dir")))


def outcome_of(call, capsys) -> tuple[str, str]:
    """("fit" | "exit <code>" | "returned", stderr) of ``call()``; any other exception propagates."""
    try:
        call()
        outcome = "returned"
    except ReachedFit:
        outcome = "fit"
    except SystemExit as exc:
        outcome = f"exit {exc.code}"
    except Exception as exc:  # noqa: BLE001 - a bug: exit_on_user_error let it through with its traceback
        outcome = f"Traceback: {type(exc).__name__}: {exc}"
    return outcome, capsys.readouterr().err


def problem(case: str, outcome: str, err: str) -> str | None:
    """What is wrong with how a case ended (None: it reached fit, or stopped with one ``error:`` line
    and exit code 2)."""
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    key = case.split(maxsplit=1)[-1].split("=")[0]  # "experiment=x key=value", the value may hold spaces
    # An object's constructor names its node (callbacks.model_checkpoint; a nested one by its own name: loss).
    node = key.rpartition(".")[0]
    nodes = f"{re.escape(node)}|{re.escape(node.rpartition('.')[2])}"
    named = len(errors) == 1 and (key in errors[0] or re.search(rf"full_key: ({nodes})\b", errors[0]) is not None)
    if "Traceback" not in err and (outcome == "fit" or (outcome == "exit 2" and named)):
        return None
    return f"{case}: {outcome}: {err.strip()[-400:]}"


def validate_and_train(base: DictConfig, case: str, output_dir: Path) -> None:
    """What bin/train.py's Hydra job does with the composed config plus ``case``."""
    cfg = apply_overrides(copy.deepcopy(base), [case])
    cfg.paths.output_dir = str(output_dir)
    validate_config(cfg)
    train(cfg)


@pytest.fixture
def stop_at_fit(monkeypatch, tmp_path):
    monkeypatch.setattr(pl.Trainer, "fit", lambda *a, **k: (_ for _ in ()).throw(ReachedFit()))
    monkeypatch.chdir(tmp_path)  # a relative path drawn for an output key lands here


def test_fuzz_train_config(stop_at_fit, capsys, tmp_path, data_dir):
    """200 drawn overrides over four experiments, each applied to the composed config and run through
    what bin/train.py's Hydra job runs on it (validate, then ``train``) up to fitting."""
    failures, outcomes, drawn = [], [], 0
    for experiment, tiny in TINY_EXPERIMENTS.items():
        base = compose_config([f"experiment={experiment}", *tiny], tmp_path, data_dir)
        # resume= is read before composition (bin/train.py's resume_config): the main() sample draws it.
        keys = [k for k in train_keys(base) if k != "resume"]
        for case in draw_cases(keys, CASES // len(TINY_EXPERIMENTS), seed=drawn):
            drawn += 1

            job = functools.partial(validate_and_train, base, case, tmp_path / experiment / str(drawn))
            outcome, err = outcome_of(exit_on_user_error(job), capsys)
            outcomes.append(outcome)
            failures.append(problem(f"experiment={experiment} {case}", outcome, err))
    assert len(outcomes) == CASES and {"fit", "exit 2"} <= set(outcomes)
    assert not [f for f in failures if f], "\n".join(f for f in failures if f)


def test_fuzz_bin_train_main(stop_at_fit, monkeypatch, capsys, tmp_path, data_dir):
    """A sample of drawn overrides through bin/train.py's own main(): Hydra's composition and run."""
    spec = importlib.util.spec_from_file_location("bin_train", ROOT / "bin" / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    failures = []
    for experiment, tiny in TINY_EXPERIMENTS.items():
        base = [f"experiment={experiment}", *tiny, f"paths.results_dir={tmp_path}", f"paths.data_dir={data_dir}"]
        keys = train_keys(compose_config(base[:-2], tmp_path))
        for case in draw_cases(keys, MAIN_CASES // len(TINY_EXPERIMENTS), seed=1000 + len(failures)):
            monkeypatch.setattr(sys, "argv", ["bin/train.py", *base, case])
            failures.append(problem(f"experiment={experiment} {case}", *outcome_of(module.main, capsys)))
    assert not [f for f in failures if f], "\n".join(f for f in failures if f)


@pytest.mark.parametrize("config_name", COMMAND_CONFIGS)
def test_fuzz_command_configs(config_name, tmp_path):
    """The commands' own keys: a drawn value either validates or is a UserError naming its key."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name=config_name)
    if "paths" in cfg:
        cfg.paths.output_dir = str(tmp_path)
    for case in draw_cases(sorted(k for k in leaf_keys(cfg) if not k.startswith("hydra.")), 40):
        key = case.split("=")[0]
        try:
            validate_config(apply_overrides(copy.deepcopy(cfg), [case]))
        except Exception as exc:  # noqa: BLE001 - what exit_on_user_error would do with it
            assert key in (describe_error(exc) or ""), (case, exc)


@pytest.mark.slow
def test_fuzz_train_subprocesses(tmp_path):
    """A sample as real command lines, through training (debug=fast): no traceback, exit 0 or 2."""
    for case in draw_cases(train_keys(compose_config([], tmp_path)), 12, seed=2000):
        proc = run_cli("train.py", *TINY_SIAMESE, "debug=fast", f"paths.results_dir={tmp_path}", case, cwd=tmp_path)
        assert "Traceback" not in proc.stderr + proc.stdout, (case, proc.stderr[-2000:])
        assert proc.returncode in (0, 2), (case, proc.returncode, proc.stderr[-2000:])
