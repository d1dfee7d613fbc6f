"""REST service for an exported run: one onnxruntime session, the run's own preprocessing.

Endpoints: ``GET /ping/`` (health), ``POST /predict`` (any single-input model: class probabilities
when the export's metadata says its graph ends in a softmax or sigmoid (``output_activation``), else
the raw outputs, e.g. embeddings) and, for glasses runs, ``POST /glass_no_glass/`` with the
answer ``glasses`` | ``no_glasses`` | ``no_face``. Uploads are multipart field ``image``; anything
that is not a usable image gets a 4xx JSON ``{"error": ...}``, never a 500.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import FastAPI, File, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from omegaconf import DictConfig

from pipeline.data.io import decode_image
from pipeline.delivery.export import ensure_export
from pipeline.delivery.onnx_runtime import OnnxModel
from pipeline.delivery.runs import build_datamodule, load_run_config
from pipeline.utils.errors import UserError

DEFAULT_MAX_UPLOAD_BYTES = 10 * 1024 * 1024
NO_FACE = "no_face"
ImageUpload = Annotated[UploadFile, File(description="the image, multipart/form-data field 'image'")]


class UploadError(Exception):
    """A request the service cannot use; becomes a JSON error with ``status``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def class_probabilities(output: np.ndarray, activation: str) -> np.ndarray:
    """N x C class probabilities from the output of a graph ending in softmax (N x C) or sigmoid (N or N x 1)."""
    if activation == "sigmoid":
        positive = output.reshape(len(output), -1)[:, 0]
        return np.stack([1.0 - positive, positive], axis=1)
    return output


class ImageModel:
    """Preprocess one uploaded image exactly as evaluation did and run the exported model on it."""

    def __init__(self, model: OnnxModel, datamodule: Any, max_upload_bytes: int):
        self.model = model
        self.datamodule = datamodule
        self.metadata = model.metadata
        self.max_upload_bytes = max_upload_bytes
        # OpenCV face detectors are not documented as thread-safe; the ONNX session is.
        self.preprocess_lock = threading.Lock()

    def read_upload(self, upload: UploadFile) -> np.ndarray:
        """The uploaded image as RGB uint8; UploadError for empty, oversized or undecodable uploads."""
        data = upload.file.read(self.max_upload_bytes + 1)
        if not data:
            raise UploadError(400, "image: the upload is empty")
        if len(data) > self.max_upload_bytes:
            raise UploadError(413, f"image: larger than the {self.max_upload_bytes} byte limit")
        try:
            return decode_image(data, f"image '{upload.filename}'")
        except UserError as exc:
            raise UploadError(415, str(exc)) from None

    def outputs(self, rgb: np.ndarray) -> dict[str, np.ndarray] | None:
        """The model's outputs for one image (batch of one), or None when preprocessing finds no usable input."""
        with self.preprocess_lock:
            tensor = self.datamodule.preprocess(rgb)
        if tensor is None:
            return None
        name = self.model.input_names[0]
        return self.model(**{name: tensor.unsqueeze(0).numpy()})

    def probabilities(self, rgb: np.ndarray) -> dict[str, float] | None:
        """Probability per class name, or None (no face)."""
        outputs = self.outputs(rgb)
        if outputs is None:
            return None
        probs = class_probabilities(next(iter(outputs.values())), self.metadata.get("output_activation", "softmax"))[0]
        return {name: float(p) for name, p in zip(self.metadata["class_names"], probs, strict=True)}


def error_response(status: int, message: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": message})


def create_app(
    run_dir: str | Path,
    cfg: DictConfig | None = None,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    threads: int | None = None,
) -> FastAPI:
    """The service for a run: loads (exporting first if needed) its ONNX model once."""
    run_dir = Path(run_dir)
    cfg = cfg if cfg is not None else load_run_config(run_dir)
    image_model = ImageModel(OnnxModel(ensure_export(run_dir, cfg), threads), build_datamodule(cfg, setup=False),
                             max_upload_bytes)
    metadata = image_model.metadata
    if len(image_model.model.input_names) != 1:
        raise UserError(f"run: {run_dir} exports a model with inputs {image_model.model.input_names}; "
                        "the service serves single-image models")
    app = FastAPI(title=f"{metadata.get('task', 'model')} service")
    app.state.image_model = image_model

    @app.middleware("http")
    async def reject_large_bodies(request: Request, call_next):
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > max_upload_bytes + 64 * 1024:
            return error_response(413, f"request body larger than the {max_upload_bytes} byte limit")
        return await call_next(request)

    @app.exception_handler(UploadError)
    async def upload_error(request: Request, exc: UploadError):
        return error_response(exc.status, str(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError):
        return error_response(422, "send the image as multipart/form-data field 'image'")

    @app.get("/ping/")
    def ping() -> dict[str, Any]:
        return {"status": "ok", "task": metadata.get("task"), "model": str(image_model.model.path)}

    @app.post("/predict")
    def predict(image: ImageUpload) -> dict[str, Any]:
        rgb = image_model.read_upload(image)
        if metadata.get("output_activation") not in ("softmax", "sigmoid"):
            outputs = image_model.outputs(rgb)
            return {"outputs": None if outputs is None else {k: v[0].tolist() for k, v in outputs.items()}}
        probs = image_model.probabilities(rgb)
        if probs is None:
            return {"label": NO_FACE, "probabilities": None}
        return {"label": max(probs, key=probs.get), "probabilities": probs}

    if metadata.get("task") == "glasses":

        @app.post("/glass_no_glass/")
        def glass_no_glass(image: ImageUpload) -> dict[str, Any]:
            probs = image_model.probabilities(image_model.read_upload(image))
            if probs is None:
                return {"answer": NO_FACE, "probability": None}
            negative, positive = metadata["class_names"]
            p = probs[positive]
            return {"answer": positive if p >= metadata.get("threshold", 0.5) else negative, "probability": p}

    return app
