"""Serve a trained run over HTTP (FastAPI + uvicorn) with its exported ONNX model:
``python bin/serve.py [run=<folder>|latest] [host=127.0.0.1] [port=8888] [max_upload_mb=10] [threads=<n>]``
(config: configs/serve.yaml); the run is exported first if it has no export."""

import uvicorn

from pipeline.delivery.runs import Run, run_command
from pipeline.delivery.serve import create_app


@run_command("serve")
def main(run: Run) -> None:
    cfg = run.cfg
    app = create_app(run, max_upload_bytes=int(cfg.max_upload_mb * 1024 * 1024), threads=cfg.threads)
    uvicorn.run(app, host=cfg.host, port=int(cfg.port))


if __name__ == "__main__":
    main()
