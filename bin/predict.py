"""Run a trained model over the user's files: ``python bin/predict.py [run=<folder>|latest|[a,b,c]]
input=<dir|file|csv> [out=<dir>] [ckpt=best|last] [backend=torch|onnx] [options.<name>=value]``
(config: configs/predict.yaml merged onto the run's saved config)."""

from pipeline.delivery.predict import predict
from pipeline.runs.run import Run, run_command


@run_command("predict")
def main(run: Run) -> None:
    print(f"Wrote {predict(run)}")


if __name__ == "__main__":
    main()
