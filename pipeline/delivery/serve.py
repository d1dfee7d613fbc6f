"""REST service for an exported run: one onnxruntime session, the run's own preprocessing, every task.

The export's metadata says how to answer (``kind``), names every output with its activation and
threshold (``outputs``) and declares the task's own routes (``routes``); nothing here names a task.

- ``GET /ping/``: health.
- ``POST /predict`` (one image, field ``image``): classifiers answer ``label`` and ``probabilities`` of the
  main output plus every output (multi-head) under ``outputs``; detectors answer ``detections`` (boxes
  in the image's pixels, above the score threshold); embedding models answer ``embedding``.
- ``POST /compare`` (fields ``image1``, ``image2``; pair and embedding models): ``score`` and ``same``.
- Task routes (e.g. ``/glass_no_glass/``): ``{<answer>: class, "probability": p}``.

A face-based preprocessing that finds no face answers ``no_face``; anything that is not a usable image
gets a 4xx JSON ``{"error": ...}``, never a 500.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import FastAPI, File, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from pipeline.data.detection_transforms import unletterbox_boxes
from pipeline.data.io import decode_image
from pipeline.delivery.export import ensure_export
from pipeline.delivery.onnx_runtime import OnnxModel
from pipeline.delivery.runs import Run
from pipeline.utils.errors import UserError

DEFAULT_MAX_UPLOAD_BYTES = 10 * 1024 * 1024
NO_FACE = "no_face"
ImageUpload = Annotated[UploadFile, File(description="the image, multipart/form-data field 'image'")]


class UploadError(Exception):
    """A request the service cannot use; becomes a JSON error with ``status``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def decide_class(output: dict[str, Any], probs: np.ndarray) -> tuple[str, float]:
    """The class an output's probabilities decide (``P(class 1) >= threshold`` for two classes, else the
    most probable) and the probability reported with it (of class 1 for two classes)."""
    classes, threshold = output["classes"], output.get("threshold")
    if len(classes) == 2 and threshold is not None:
        return classes[int(probs[1] >= threshold)], float(probs[1])
    index = int(np.argmax(probs))
    return classes[index], float(probs[index])


class ExportedModel:
    """The exported model with the run's preprocessing: decode an upload, preprocess it as evaluation did, run."""

    def __init__(self, model: OnnxModel, datamodule: Any, max_upload_bytes: int):
        self.model = model
        self.datamodule = datamodule
        self.metadata = model.metadata
        self.outputs = {output["name"]: output for output in self.metadata["outputs"]}
        self.max_upload_bytes = max_upload_bytes
        # OpenCV face detectors are not documented as thread-safe; the ONNX session is.
        self.preprocess_lock = threading.Lock()

    def read_upload(self, upload: UploadFile) -> np.ndarray:
        """The uploaded image as RGB uint8; UploadError for empty, oversized or undecodable uploads."""
        data = upload.file.read(self.max_upload_bytes + 1)
        if not data:
            raise UploadError(400, f"{upload.filename or 'image'}: the upload is empty")
        if len(data) > self.max_upload_bytes:
            raise UploadError(413, f"image: larger than the {self.max_upload_bytes} byte limit")
        try:
            return decode_image(data, f"image '{upload.filename}'")
        except UserError as exc:
            raise UploadError(415, str(exc)) from None

    def preprocess(self, rgb: np.ndarray) -> np.ndarray | None:
        """The model input of one image (batch of one), or None when preprocessing finds no usable input."""
        with self.preprocess_lock:
            tensor = self.datamodule.preprocess(rgb)
        return None if tensor is None else tensor.unsqueeze(0).numpy()

    def run_one(self, rgb: np.ndarray) -> dict[str, np.ndarray] | None:
        """The outputs of a single-input model for one image, or None (no face)."""
        array = self.preprocess(rgb)
        return None if array is None else self.model(**{self.model.input_names[0]: array})

    def embedding(self, rgb: np.ndarray) -> dict[str, Any]:
        arrays = self.run_one(rgb)
        return {"embedding": None if arrays is None else arrays[next(iter(self.outputs))][0].tolist()}

    def classes(self, rgb: np.ndarray) -> dict[str, Any]:
        """Label and probabilities of the main output, and of every output under ``outputs``."""
        arrays = self.run_one(rgb)
        if arrays is None:
            return {"label": NO_FACE, "probabilities": None}
        answers = {}
        for name, output in self.outputs.items():
            probs = arrays[name][0]
            answers[name] = {"label": decide_class(output, probs)[0],
                             "probabilities": dict(zip(output["classes"], map(float, probs), strict=True))}
        return {**next(iter(answers.values())), "outputs": answers}

    def detections(self, rgb: np.ndarray) -> dict[str, Any]:
        """Boxes above the score threshold, in the uploaded image's pixels."""
        tensor, scale, pad = self.datamodule.letterbox_image(rgb)
        arrays = self.model(**{self.model.input_names[0]: tensor.unsqueeze(0).numpy()})
        keep = (arrays["labels"] >= 0) & (arrays["scores"] >= self.outputs["scores"]["threshold"])
        boxes = unletterbox_boxes(arrays["boxes"][keep], scale, pad, rgb.shape[:2])
        names = self.outputs["labels"]["classes"]
        return {"detections": [{"label": names[int(c)], "score": float(s), "box": [float(v) for v in box]}
                               for c, s, box in zip(arrays["labels"][keep], arrays["scores"][keep], boxes, strict=True)]}

    def compare(self, first: np.ndarray, second: np.ndarray) -> dict[str, Any]:
        """Whether two images show the same thing: cosine of embeddings, or the pair model's probability."""
        inputs = [self.preprocess(rgb) for rgb in (first, second)]
        if any(array is None for array in inputs):
            return {"score": None, "same": None}
        output = next(iter(self.outputs.values()))
        if self.metadata["kind"] == "pair":
            logit = self.model(**dict(zip(self.model.input_names, inputs, strict=True)))[output["name"]]
            score = float(1 / (1 + np.exp(-logit.reshape(-1)[0])))
        else:
            first_embedding, second_embedding = (self.model(**{self.model.input_names[0]: a})[output["name"]][0] for a in inputs)
            score = float(np.dot(first_embedding, second_embedding))
        return {"score": score, "same": score >= output["threshold"], "threshold": output["threshold"]}


def error_response(status: int, message: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": message})


def create_app(run: Run | str | Path, max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES, threads: int | None = None) -> FastAPI:
    """The service for a run (a ``Run`` or its folder): loads (exporting first if needed) its ONNX model once."""
    run = run if isinstance(run, Run) else Run.open(run)
    exported = ExportedModel(OnnxModel(ensure_export(run), threads), run.datamodule(setup=False), max_upload_bytes)
    app = FastAPI(title=f"{exported.metadata.get('task', 'model')} service")
    app.state.exported = exported
    add_error_handlers(app, max_upload_bytes)

    @app.get("/ping/")
    def ping() -> dict[str, Any]:
        return {"status": "ok", "task": exported.metadata.get("task"), "model": str(exported.model.path)}

    add_model_routes(app, exported)
    return app


def add_model_routes(app: FastAPI, exported: ExportedModel) -> None:
    """``/predict`` and ``/compare`` as the export's kind allows, and the task's own routes."""
    kind = exported.metadata["kind"]
    answer = {"classes": exported.classes, "detection": exported.detections, "embedding": exported.embedding}.get(kind)
    if answer is not None:

        @app.post("/predict")
        def predict(image: ImageUpload) -> dict[str, Any]:
            return answer(exported.read_upload(image))

    if kind in ("pair", "embedding"):

        @app.post("/compare")
        def compare(image1: ImageUpload, image2: ImageUpload) -> dict[str, Any]:
            return exported.compare(exported.read_upload(image1), exported.read_upload(image2))

    for route in exported.metadata.get("routes", []):
        app.post(route["path"])(route_answer(exported, route))


def route_answer(exported: ExportedModel, route: dict[str, Any]):
    """A task route: ``{<answer>: decided class of the route's output, "probability": p}``."""

    def answer(image: ImageUpload) -> dict[str, Any]:
        arrays = exported.run_one(exported.read_upload(image))
        if arrays is None:
            return {route["answer"]: NO_FACE, "probability": None}
        label, probability = decide_class(exported.outputs[route["output"]], arrays[route["output"]][0])
        return {route["answer"]: label, "probability": probability}

    return answer


def add_error_handlers(app: FastAPI, max_upload_bytes: int) -> None:
    """Oversized bodies, unusable uploads and malformed requests become JSON 4xx answers."""

    @app.middleware("http")
    async def reject_large_bodies(request: Request, call_next):
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > 2 * max_upload_bytes + 64 * 1024:
            return error_response(413, f"request body larger than the {max_upload_bytes} byte limit")
        return await call_next(request)

    @app.exception_handler(UploadError)
    async def upload_error(request: Request, exc: UploadError):
        return error_response(exc.status, str(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError):
        return error_response(422, "send the image as multipart/form-data field 'image' (/compare: 'image1', 'image2')")
