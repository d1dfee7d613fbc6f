"""The runs of an experiment side by side: ``python bin/runs.py [experiment=<name>] [--diff <run> <run>]``.

Without ``experiment=`` every experiment under ``paths.results_dir`` is listed. Each table is also
written to ``<results_dir>/<experiment>/runs.csv``.
"""

import sys
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from rich.table import Table

from pipeline.runs.layout import RunLayout
from pipeline.runs.table import config_diff, find_runs, read_history, runs_rows, write_dict_rows
from pipeline.utils.cli import exit_on_user_error, run_hydra
from pipeline.utils.console import wide_console
from pipeline.utils.errors import UserError
from pipeline.utils.files import read_json


def show_table(title: str, rows: list[dict]) -> None:
    table = Table(title=title, title_justify="left")
    for key in rows[0]:
        table.add_column(key, justify="right" if isinstance(rows[0][key], float | int) else "left", no_wrap=True)
    for row in rows:
        table.add_row(*("" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v) for v in row.values()))
    wide_console().print(table)


def list_runs(results_dir: Path, experiment: str | None) -> None:
    experiment_dirs = [results_dir / experiment] if experiment else sorted(p for p in results_dir.iterdir() if p.is_dir())
    for experiment_dir in experiment_dirs:
        runs = find_runs(experiment_dir)
        if not runs:
            if experiment:
                raise UserError(f"experiment: no runs in '{experiment_dir}' (train one with bin/train.py experiment={experiment})")
            continue
        rows = runs_rows(runs)
        write_dict_rows(experiment_dir / "runs.csv", rows)
        show_table(f"{experiment_dir.name}: {len(rows)} runs ({experiment_dir / 'runs.csv'})", rows)


def resolve(run: str, results_dir: Path, experiment: str | None) -> Path:
    """A run folder given as a path, or as its name under the experiment's folder."""
    candidates = [Path(run).expanduser()] + ([results_dir / experiment / run] if experiment else [])
    for candidate in candidates:
        if RunLayout(candidate).is_run():
            return candidate.resolve()
    raise UserError(f"diff: '{run}' is not a run folder (give a path, or a run name with experiment=<name>)")


def final_metrics(run: Path) -> dict[str, float]:
    """A run's best monitored value and its epoch, then its test metrics (``results/metrics.json``)."""
    results = read_json(RunLayout(run).metrics, {})
    best = results.get("best")
    if not best:
        return dict(results.get("test", {}))
    epoch = next((row["epoch"] for row in read_history(run) if row.get(best["monitor"]) == best["score"]), None)
    return {f"best {best['monitor']}": best["score"], "best epoch": epoch, **results.get("test", {})}


def show_diff(run_a: Path, run_b: Path) -> None:
    changes = config_diff(run_a, run_b)
    table = Table(title=f"config differences: {len(changes)} keys", title_justify="left")
    table.add_column("key")
    table.add_column(run_a.name)
    table.add_column(run_b.name)
    for key, a, b in changes:
        table.add_row(key, str(a), str(b))
    wide_console().print(table)
    metrics_a, metrics_b = final_metrics(run_a), final_metrics(run_b)
    table = Table(title=f"final metrics (difference: {run_b.name} minus {run_a.name})", title_justify="left")
    for column in ("metric", run_a.name, run_b.name, "difference"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for name in dict.fromkeys([*metrics_a, *metrics_b]):
        a, b = metrics_a.get(name), metrics_b.get(name)
        shown = ["" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v) for v in (a, b)]
        table.add_row(name, *shown, f"{b - a:+.4f}" if isinstance(a, float) and isinstance(b, float) else "")
    wide_console().print(table)


def runs(cfg: DictConfig) -> None:
    results_dir = Path(cfg.paths.results_dir)
    given = HydraConfig.initialized() and any(o.split("=")[0] == "experiment" for o in HydraConfig.get().overrides.task)
    experiment = cfg.name if given else None
    if cfg.diff:
        if len(cfg.diff) != 2:
            raise UserError("diff: give two runs (--diff <run> <run>)")
        show_diff(*(resolve(str(run), results_dir, experiment) for run in cfg.diff))
        return
    list_runs(results_dir, experiment)


def diff_flag_to_override(argv: list[str]) -> list[str]:
    """``--diff A B`` -> ``diff=[A,B]`` (Hydra has no two-value flags)."""
    if "--diff" not in argv:
        return argv
    at = argv.index("--diff")
    pair = argv[at + 1 : at + 3]
    if len(pair) != 2:
        raise UserError("diff: give two runs (--diff <run> <run>)")
    return argv[:at] + [f"diff=[{pair[0]},{pair[1]}]"] + argv[at + 3 :]


@exit_on_user_error
def main() -> None:
    sys.argv[1:] = diff_flag_to_override(sys.argv[1:])
    run_hydra("runs", runs)


if __name__ == "__main__":
    main()
