"""Glasses on the eyes: the single-head classifier plus the "no_face" answer and a folder run.

Training, metrics, TTA and export are :class:`ClassificationTask`'s. What glasses adds: a photo
without a face (``datamodule.preprocess`` returns None) is answered ``no_face`` instead of failing,
``predict_files`` prints the paths of images with glasses, and the service gets the task's own route
``/glass_no_glass/``.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

import torch

from pipeline.data.io import load_image
from pipeline.data.prediction_inputs import prediction_inputs
from pipeline.trainers.classification import ClassificationTask
from pipeline.utils.contracts import ExportSpec, Route
from pipeline.utils.errors import UserError
from pipeline.utils.progress import batched

log = logging.getLogger(__name__)

NO_FACE = "no_face"
UNREADABLE = "unreadable"


class GlassesTask(ClassificationTask):
    """Binary glasses classifier; class 1 (``glasses``) when its probability >= ``threshold``."""

    def export_spec(self) -> ExportSpec:
        """The classifier's export, with the eye-zone preprocessing facts and the ``/glass_no_glass/`` route."""
        spec = super().export_spec()
        spec.metadata.update({"preprocessing": "eye_zone", "detect_face": self.data_info.get("detect_face", False),
                              "face_margin": self.data_info.get("face_margin", 0.1)})
        spec.routes.append(Route("/glass_no_glass/", spec.outputs[0].name))
        return spec

    def predict_files(self, datamodule: Any, source: Path, out_dir: Path, **options: Any) -> Path:
        """Classify images (a file, a folder or a ``path`` CSV) into ``out_dir/predictions.csv``
        (``path,label,probability``; label ``no_face`` or ``unreadable`` with no probability) and print
        the paths of the images with glasses. Options: ``tta=flip|flip_crops``, ``batch_size``, ``quiet``."""
        tta = options.get("tta", self.tta)
        batch_size = int(options.get("batch_size", datamodule.eval_batch_size))
        paths = prediction_inputs(Path(source)).paths
        class_names = self.data_info["class_names"]
        rows: list[tuple[Path, str, str]] = []
        self.eval()
        for chunk in batched(paths, batch_size):
            tensors = [self.preprocessed(datamodule, path) for path in chunk]
            kept = [t for t in tensors if isinstance(t, torch.Tensor)]
            probs = iter(self.glasses_probabilities(torch.stack(kept), tta) if kept else [])
            for path, tensor in zip(chunk, tensors, strict=True):
                if isinstance(tensor, str):
                    rows.append((path, tensor, ""))
                    continue
                p = next(probs)
                rows.append((path, class_names[int(p >= self.threshold)], f"{p:.6f}"))
        out_dir.mkdir(parents=True, exist_ok=True)
        out_file = out_dir / "predictions.csv"
        with open(out_file, "w", newline="") as fh:
            csv.writer(fh).writerows([("path", "label", "probability"), *rows])
        if not options.get("quiet"):
            for path, label, _ in rows:
                if label == class_names[1]:
                    print(path)
        counts = {name: sum(row[1] == name for row in rows) for name in (*class_names, NO_FACE, UNREADABLE)}
        log.info("%s", ", ".join(f"{n} {name}" for name, n in counts.items() if n))
        return out_file

    @staticmethod
    def preprocessed(datamodule: Any, path: Path) -> torch.Tensor | str:
        """The model input for one file, or the label that replaces a prediction (no face, unreadable)."""
        try:
            tensor = datamodule.preprocess(load_image(path))
        except UserError as exc:
            log.warning("%s", exc)
            return UNREADABLE
        return NO_FACE if tensor is None else tensor

    @torch.no_grad()
    def glasses_probabilities(self, images: torch.Tensor, tta: str | None) -> list[float]:
        """P(glasses) per image."""
        return self.probabilities(images.to(self.device), tta)["label"][:, 1].tolist()
