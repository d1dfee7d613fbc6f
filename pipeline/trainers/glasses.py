"""Glasses on the eyes: :class:`ClassificationTask` (training, metrics, TTA, export; a photo without a face
is answered ``no_face``) whose prediction prints the paths of images with glasses (the export's ``listed``
class), with the service route ``/glass_no_glass/``."""

from __future__ import annotations

from pipeline.delivery.answers import ExportSpec, Route
from pipeline.trainers.classification import ClassificationTask


class GlassesTask(ClassificationTask):
    """Binary glasses classifier; class 1 (``glasses``) when its probability >= ``threshold``."""

    def export_spec(self) -> ExportSpec:
        """The classifier's export, with the eye-zone preprocessing facts and the ``/glass_no_glass/`` route."""
        spec = super().export_spec()
        spec.metadata.update({"preprocessing": "eye_zone", "detect_face": self.data_info.detect_face,
                              "face_margin": self.data_info.face_margin, "listed": spec.outputs[0].classes[1]})
        spec.routes.append(Route("/glass_no_glass/", spec.outputs[0].name))
        return spec
