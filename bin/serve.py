"""Serve a trained run over HTTP (FastAPI + uvicorn) with its exported ONNX model:
``python bin/serve.py [run=<folder>|latest] [host=127.0.0.1] [port=8888] [max_upload_mb=10] [max_pixels=50000000]
[max_concurrency=<n>] [max_queue=64] [api_key=<key>] [threads=<n>] [score_threshold=<0..1|best>]``
(config: configs/serve.yaml); the run is exported first if it has no export."""

import logging
import sys

try:
    import uvicorn

    from pipeline.delivery.serve import API_KEY_ENV, ServeLimits, create_app, is_loopback
except ModuleNotFoundError as exc:  # the `serve` extra (fastapi, uvicorn, python-multipart) is not installed
    if exc.name not in ("uvicorn", "fastapi", "starlette", "multipart", "python_multipart"):
        raise
    print(f"error: bin/serve.py needs the `serve` extra ({exc.name} is missing): "
          "pip install -e '.[serve]', or run `make venv`", file=sys.stderr)
    sys.exit(2)

from pipeline.runs.run import Run, run_command

log = logging.getLogger(__name__)


@run_command("serve")
def main(run: Run) -> None:
    cfg = run.cfg
    limits = ServeLimits.from_config(cfg)  # a bad value stops here, before the model loads
    if not limits.api_key and not is_loopback(str(cfg.host)):
        log.warning("warning: host=%s: the service is reachable from other machines without an API key "
                    "(set api_key or $%s)", cfg.host, API_KEY_ENV)
    app = create_app(run, limits, threads=cfg.threads, options={"score_threshold": cfg.get("score_threshold")})
    uvicorn.run(app, host=cfg.host, port=cfg.port)


if __name__ == "__main__":
    main()
