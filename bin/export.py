"""Export a trained run to ONNX (metadata inside, onnxruntime parity checked on validation samples).

``python bin/export.py [run=<folder>|latest] [experiment=<name>] [ckpt=best|last|<path>] [samples=16]
[tolerance=1e-4] [key.path=value ...]``  -> ``<run>/export/model.onnx`` and ``export.json``.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.delivery.export import ParityError, export_run  # noqa: E402
from pipeline.delivery.runs import load_run_args  # noqa: E402
from pipeline.utils.cli import exit_on_user_error  # noqa: E402
from pipeline.utils.errors import UserError  # noqa: E402

USAGE = "run=<folder>|latest, experiment=<name>, ckpt=best|last|<path>, samples=<n>, tolerance=<float>"
KNOWN = ("ckpt", "samples", "tolerance")


@exit_on_user_error
def main() -> None:
    args = load_run_args(sys.argv[1:], USAGE)
    options = args.options
    unknown = sorted(set(options) - set(KNOWN))
    if unknown:
        raise UserError(f"{unknown[0]}: unknown option ({USAGE})")
    try:
        samples, tolerance = int(options.get("samples", 16)), float(options.get("tolerance", 1e-4))
    except ValueError as exc:
        raise UserError(f"samples/tolerance: expected numbers ({exc})") from None
    print(f"Exporting run {args.run_dir}")
    try:
        report = export_run(args.run_dir, args.cfg, options.get("ckpt", "best"), samples, tolerance)
    except ParityError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    diffs = ", ".join(f"{name} {value:.2e}" for name, value in report["max_abs_diff"].items())
    print(f"Wrote {report['model']} ({report['size_bytes'] / 1e6:.3f} MB)")
    print(f"Parity on {report['parity_samples']} validation samples: max abs diff {diffs} (tolerance {report['tolerance']})")


if __name__ == "__main__":
    main()
