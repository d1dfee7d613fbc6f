"""Export a trained run to ONNX (metadata inside, onnxruntime parity checked on validation samples):
``python bin/export.py [run=<folder>|latest] [ckpt=best|last|<path>] [samples=16] [tolerance=1e-4]``
-> ``<run>/export/model.onnx`` and ``export.json`` (config: configs/export.yaml)."""

from pipeline.delivery.export import export_command
from pipeline.runs.run import run_command

main = run_command("export")(export_command)

if __name__ == "__main__":
    main()
