"""Run a trained model over the user's files with the task's own prediction (CSV and more in out/).

``python bin/predict.py [run=<folder>|latest|[a,b,c]] [experiment=<name>] input=<dir|file|csv> [out=<dir>]
[ckpt=best|last] [backend=torch|onnx] [key=value task options] [key.path=value config overrides]``
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.delivery.predict import predict  # noqa: E402
from pipeline.utils.cli import exit_on_user_error  # noqa: E402


@exit_on_user_error
def main() -> None:
    out_file = predict(sys.argv[1:])
    print(f"Wrote {out_file}")


if __name__ == "__main__":
    main()
