"""A dataset report before training: ``python bin/inspect_data.py experiment=<name> [data.root=...]``.

Writes ``<out_dir>/data_report.md``, ``data_report.json`` and PNGs, prints a summary, and exits
with code 1 when identical or near-duplicate images or a group (person, identity) sit in more than one split.
(Not ``bin/inspect.py``: Python puts a script's folder first on the import path, so that file would
shadow the standard library's ``inspect`` for every script in bin/.)
"""

import sys
from pathlib import Path

from omegaconf import DictConfig
from rich.table import Table

from pipeline.analysis.dataset_report import DatasetReport, write_report
from pipeline.analysis.items import list_items
from pipeline.runs.run import build_datamodule
from pipeline.utils.cli import exit_on_user_error, run_hydra
from pipeline.utils.console import wide_console

FOUND_PROBLEMS_EXIT = 1


def summary(report: DatasetReport, title: str) -> Table:
    """Per-split totals, then the checks with their counts."""
    table = Table(title=title, title_justify="left")
    table.add_column("check")
    table.add_column("result", justify="right")
    totals: dict[str, int] = {}
    for per_split in report.counts.values():
        for split, n in per_split.items():
            totals[split] = totals.get(split, 0) + n
    for split, n in sorted(totals.items(), key=lambda kv: kv[0] == "total"):
        table.add_row(f"images in {split}", str(n))
    table.add_row("classes" if report.objects is None else "class combinations", str(len(report.counts)))
    if report.objects:
        per_image = report.objects["boxes_per_image"]
        table.add_row("boxes", str(sum(n["total"] for n in report.objects["per_class"].values())))
        table.add_row("boxes per image (median / max)", f"{per_image['median']:g} / {per_image['max']}")
        table.add_row("boxes under 16 px (shorter side)", str(report.objects["boxes_under_16px"]))
    table.add_row("groups (person / identity)", str(report.groups.get("groups", 0)))
    table.add_row("image sizes", ", ".join(list(report.sizes)[:3]) + (" ..." if len(report.sizes) > 3 else ""))
    table.add_row("unusable files", str(len(report.unusable)))
    table.add_row("identical image sets", str(len(report.exact_duplicates)))
    across = sum(p["splits"][0] != p["splits"][1] for p in report.near_duplicates)
    table.add_row("near-duplicate pairs (across splits)", f"{len(report.near_duplicates)} ({across})")
    table.add_row("look-alikes (hash only, not duplicates)", str(report.lookalikes))
    table.add_row("groups in several splits", str(len(report.group_leaks)))
    return table


def inspect(cfg: DictConfig) -> int:
    datamodule = build_datamodule(cfg)
    out_dir = Path(cfg.out_dir)
    report = write_report(list_items(datamodule), out_dir, f"{cfg.name}: data report", cfg.near_distance,
                          cfg.fail_on_near_duplicates, cfg.near_pixel_difference)
    console = wide_console()
    console.print(summary(report, f"{cfg.name}: data report ({out_dir / 'data_report.md'})"))
    for problem in report.problems:
        console.print(f"[bold red]problem:[/] {problem}")
    if not report.problems:
        console.print("no leak: no identical or near-duplicate images and no group in more than one split")
    return FOUND_PROBLEMS_EXIT if report.problems else 0


def inspect_and_exit(cfg: DictConfig) -> None:
    code = inspect(cfg)
    if code:
        sys.exit(code)


@exit_on_user_error
def main() -> None:
    run_hydra("inspect", inspect_and_exit)


if __name__ == "__main__":
    main()
