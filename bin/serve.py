"""Serve a trained run over HTTP (FastAPI + uvicorn) with its exported ONNX model.

``python bin/serve.py [run=<folder>|latest] [experiment=<name>] [host=127.0.0.1] [port=8888]
[max_upload_mb=10] [threads=<onnxruntime threads>]``; the run is exported first if it has no export.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import uvicorn  # noqa: E402

from pipeline.delivery.runs import load_run_args  # noqa: E402
from pipeline.delivery.serve import create_app  # noqa: E402
from pipeline.utils.cli import exit_on_user_error  # noqa: E402
from pipeline.utils.errors import UserError  # noqa: E402

USAGE = "run=<folder>|latest, experiment=<name>, host=<address>, port=<n>, max_upload_mb=<MB>, threads=<n>"
KNOWN = ("host", "port", "max_upload_mb", "threads")


@exit_on_user_error
def main() -> None:
    args = load_run_args(sys.argv[1:], USAGE)
    unknown = sorted(set(args.options) - set(KNOWN))
    if unknown:
        raise UserError(f"{unknown[0]}: unknown option ({USAGE})")
    options = args.options
    try:
        port = int(options.get("port", 8888))
        max_bytes = int(float(options.get("max_upload_mb", 10)) * 1024 * 1024)
        threads = int(options["threads"]) if "threads" in options else None
    except ValueError as exc:
        raise UserError(f"port/max_upload_mb/threads: expected numbers ({exc})") from None
    app = create_app(args.run_dir, args.cfg, max_upload_bytes=max_bytes, threads=threads)
    uvicorn.run(app, host=options.get("host", "127.0.0.1"), port=port)


if __name__ == "__main__":
    main()
