"""What a model answers, one record type per answer kind (as ultralytics' Results), and what a task exports.

A task's ``export_spec()`` names its record type (``ExportSpec.answer``; the ONNX metadata stores its name). Each
record type holds everything that differs per kind: its ONE post-processor ``of`` (a backend's outputs on a batch
-> the record; the same for torch, ONNX and the service), its service answer (``json``, ``ROUTES``), its prediction
files (``write``), the ``bin/predict.py`` options it reads and how two backends' outputs are compared (``differences``).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import cv2
import numpy as np
import torch
import torch.nn as nn
from torchvision.utils import draw_bounding_boxes

from pipeline.data.combine import combine_runs, submission_writer
from pipeline.data.detection_transforms import unletterbox_boxes
from pipeline.data.formats.verification import write_pair_scores
from pipeline.data.io import load_image
from pipeline.data.prediction_inputs import NO_FACE
from pipeline.runs.layout import RunLayout
from pipeline.utils.errors import UserError
from pipeline.utils.files import read_json, write_csv

log = logging.getLogger(__name__)

# Class colours for drawn boxes (cycled); ground truth is drawn in white.
PALETTE = ((40, 200, 40), (230, 40, 40), (255, 160, 0), (0, 150, 255), (200, 0, 200), (0, 200, 200))
MAIN_OUTPUT = "probabilities"


def decide_and_report(probs: torch.Tensor, threshold: float | None = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Class indices (argmax, or ``P(class 1) >= threshold`` for two classes; ``threshold`` None: 0.5) and the
    probability reported with each: of class 1 for two classes (what the threshold is compared with), else of the
    decided class."""
    if probs.shape[1] == 2:
        return (probs[:, 1] >= (0.5 if threshold is None else threshold)).long(), probs[:, 1]
    decided = probs.argmax(dim=1)
    return decided, probs.gather(1, decided[:, None]).squeeze(1)


def draw_detections(image: torch.Tensor, detections: dict[str, torch.Tensor], class_names: list[str]) -> torch.Tensor:
    """Draw predicted boxes (class colour, ``name score``) on a CHW uint8 image (the prediction drawings; training
    figures draw truth and predictions with ``pipeline.callbacks.image_grid.truth_and_prediction``)."""
    if len(detections["boxes"]):
        labels = detections["labels"].tolist()
        captions = [f"{class_names[c]} {s:.2f}" for c, s in zip(labels, detections["scores"].tolist(), strict=True)]
        image = draw_bounding_boxes(image, detections["boxes"], captions, colors=[PALETTE[c % len(PALETTE)] for c in labels],
                                    width=2)
    return image


def output_name(head: str) -> str:
    """The exported name of a head's probabilities: ``probabilities`` for the main one (``label``), else
    ``<head>_probabilities`` (``ClassScores.heads`` reads it back)."""
    return MAIN_OUTPUT if head == "label" else f"{head}_{MAIN_OUTPUT}"


def write_rows(path: Path, header: list[str], rows: list[list[Any]]) -> Path:
    log.info("wrote %d rows to %s", len(rows), path)
    return write_csv(path, header, rows)


class Answer:
    """A batch's answer. Each record type has ``of(backend, batch, options)``, THE post-processor (the backend's
    outputs on ``batch`` as the record; ``options``: bin/predict.py's ``options.*``, those it reads in ``OPTIONS``),
    ``json()``, the service's answer for the batch's first item on its ``ROUTES`` (``/predict``: one image,
    ``/compare``: two; ``UNUSABLE`` when preprocessing finds nothing to read), and, when bin/predict.py writes it,
    ``write(writer)``: the ``PredictionWriter``'s collected records as files, returning the main one."""

    OPTIONS: ClassVar[tuple[str, ...]] = ()
    SERVED_OPTIONS: ClassVar[tuple[str, ...]] = ()  # the OPTIONS a service request may set (query parameters)
    ROUTES: ClassVar[tuple[str, ...]] = ("/predict",)
    UNUSABLE: ClassVar[dict[str, Any]] = {}

    @classmethod
    def settle_options(cls, options: dict[str, Any], layout: RunLayout | None, announce: bool = True) -> dict[str, Any]:
        """``options`` with the values that depend on what the run saved (``layout``: its folder) resolved."""
        return options

    @classmethod
    def settle_spec(cls, spec: ExportSpec, layout: RunLayout | None) -> None:
        """Write what the run saved for delivery into an export's ``spec`` (its metadata)."""

    @staticmethod
    def differences(expected: dict[str, Any], actual: dict[str, Any]) -> dict[str, float]:
        """Max absolute difference per output between two backends' outputs, element by element."""
        return {name: float(np.max(np.abs(np.asarray(expected[name]) - np.asarray(actual[name]))))
                for name in expected if np.asarray(expected[name]).size}


@dataclass
class ClassScores(Answer):
    """A batch's softmax ``probabilities`` [B, classes] per exported output (main first), each output's ``classes``,
    the ``threshold`` of two-class outputs, the class whose image paths are ``listed`` (printed) and the data's
    ``target`` head a single-output run predicts (so that separate runs combine)."""

    probabilities: dict[str, torch.Tensor]
    classes: dict[str, list[str]]
    threshold: float | None = 0.5
    listed: str | None = None
    target: str | None = None
    OPTIONS: ClassVar = ("tta", "quiet")
    UNUSABLE: ClassVar = {"label": NO_FACE, "probabilities": None}

    @classmethod
    def of(cls, backend: Any, batch: dict[str, Any], options: dict[str, Any]) -> ClassScores:
        arrays, outputs = backend(batch), backend.metadata["outputs"]
        return cls({o["name"]: arrays[o["name"]] for o in outputs}, {o["name"]: o["classes"] for o in outputs},
                   outputs[0]["threshold"], backend.metadata.get("listed"), backend.metadata.get("target"))

    def decided(self, output: str) -> tuple[str, float]:
        """The first item's class in ``output`` and the probability reported with it (``decide_and_report``)."""
        decided, reported = decide_and_report(self.probabilities[output][:1], self.threshold)
        return self.classes[output][int(decided[0])], float(reported[0])

    def json(self) -> dict[str, Any]:
        """Label and probabilities of the main output, and of every output under ``outputs``."""
        answers = {name: {"label": self.decided(name)[0], "probabilities": dict(zip(self.classes[name], probs[0].tolist(),
                                                                                     strict=True))}
                   for name, probs in self.probabilities.items()}
        return {**next(iter(answers.values())), "outputs": answers}

    def route(self, route: dict[str, Any]) -> dict[str, Any]:
        """A task route's answer: ``{<answer>: decided class of the route's output, "probability": p}``."""
        label, probability = self.decided(route["output"])
        return {route["answer"]: label, "probability": probability}

    def heads(self) -> dict[str, torch.Tensor]:
        """The probabilities by head (``<head>_probabilities``), a single-output run's under its data's ``target``."""
        if self.target and len(self.probabilities) == 1:
            return {self.target: self.probabilities[MAIN_OUTPUT]}
        return {name.removesuffix(f"_{MAIN_OUTPUT}"): p for name, p in self.probabilities.items() if name != MAIN_OUTPUT}

    @classmethod
    def write(cls, writer: Any) -> Path:
        """``predictions.csv`` (``path,label,probability``; an unusable image: its status), or the dataset's
        submission for its eval folder; prints the paths of the ``listed`` class."""
        last: ClassScores = writer.runs[-1][0]
        probs, names = cls.main_probabilities(writer)
        decided, reported = decide_and_report(probs, last.threshold)
        image_ids = [item.get("image_id") for item in writer.items]
        submit = submission_writer(names) if all(image_ids) else None
        if submit is not None:
            return submit(writer.out_dir, image_ids, decided.tolist())
        rows = [[item["path"], status, ""] if status else [item["path"], names[c], f"{q:.6f}"]
                for item, status, c, q in zip(writer.items, writer.status, decided.tolist(), reported.tolist(), strict=True)]
        for path, label, _ in rows if last.listed and not writer.options.get("quiet") else ():
            if label == last.listed:
                print(path)
        log.info("%s", ", ".join(f"{n} {label}" for label, n in Counter(row[1] for row in rows).items()))
        return write_rows(writer.out_dir / "predictions.csv", ["path", "label", "probability"], rows)

    @staticmethod
    def main_probabilities(writer: Any) -> tuple[torch.Tensor, list[str]]:
        """The main output's probabilities and classes: of the one run, or its heads' combination over runs."""
        if len(writer.runs) == 1:
            first = writer.runs[0][0]
            main = next(iter(first.probabilities))
            return torch.cat([record.probabilities[main] for record in writer.runs[0]]), first.classes[main]
        merged: dict[str, torch.Tensor] = {}
        for run in writer.runs:
            merged.update({name: torch.cat([r.heads()[name] for r in run]) for name in run[0].heads()})
        return combine_runs(merged, writer.data_info)


@dataclass
class Detections(Answer):
    """Per image of a batch: ``boxes`` [N, 4] (xyxy, original pixels), ``scores``, ``labels`` (into ``classes``)."""

    detections: list[dict[str, torch.Tensor]]
    classes: list[str]
    OPTIONS: ClassVar = ("score_threshold", "draw")
    SERVED_OPTIONS: ClassVar = ("score_threshold",)

    @staticmethod
    def saved_threshold(layout: RunLayout | None) -> dict[str, Any] | None:
        """The run's best-F1 score threshold record (written by its test), or None when it has none."""
        saved = read_json(layout.detection_threshold) if layout is not None else None
        valid = isinstance(saved, dict) and isinstance(saved.get("score_threshold"), int | float)
        return saved if valid and 0 <= saved["score_threshold"] <= 1 else None

    @classmethod
    def settle_options(cls, options: dict[str, Any], layout: RunLayout | None, announce: bool = True) -> dict[str, Any]:
        """``score_threshold``: a number in [0, 1]; ``best``, the run's saved best-F1 threshold (UserError when it
        has none); unset, that saved threshold when the run has one, else the export's (the task's
        ``score_threshold``)."""
        value = options.get("score_threshold")
        saved = cls.saved_threshold(layout)
        if value is None and saved is None:
            if announce:
                log.info("score threshold: the task's score_threshold (no best threshold saved with the run)")
            return options
        if value is None or str(value).strip().lower() == "best":
            if saved is None:
                where = f"run {layout.root} has none ({layout.detection_threshold} is missing or unreadable; the " \
                        "test after training writes it)" if layout is not None else "no run folder to read it from"
                raise UserError(f"score_threshold=best: {where}; give a number instead, e.g. score_threshold=0.5")
            if announce:
                log.info("score threshold %.2f: the run's best F1 (%.3f) on its %s split (epoch %s)", saved["score_threshold"],
                         saved.get("f1", float("nan")), saved.get("split", "test"), saved.get("epoch", "?"))
            return {**options, "score_threshold": float(saved["score_threshold"])}
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = float("nan")
        if not 0 <= number <= 1:
            raise UserError(f"score_threshold: {value!r} is neither a score in [0, 1] nor best")
        return {**options, "score_threshold": number}

    @classmethod
    def settle_spec(cls, spec: ExportSpec, layout: RunLayout | None) -> None:
        """The export's ``scores`` threshold is the run's saved best-F1 one when it has one (recorded in the
        metadata as ``score_threshold_from``)."""
        saved = cls.saved_threshold(layout)
        if saved is None:
            return
        for output in spec.outputs:
            if output.name == "scores":
                output.threshold = float(saved["score_threshold"])
        spec.metadata["score_threshold_from"] = {key: saved.get(key) for key in ("f1", "iou", "split", "epoch")}

    @classmethod
    def of(cls, backend: Any, batch: dict[str, Any], options: dict[str, Any]) -> Detections:
        """Boxes above the score threshold (``options.score_threshold``, default the export's) per image, one image
        per call (a fixed-size export; padding rows have label -1), mapped back to the original pixels and clipped."""
        outputs = {output["name"]: output for output in backend.metadata["outputs"]}
        threshold = float(options.get("score_threshold", outputs["scores"]["threshold"]))
        results = []
        for image, scale, pad, size in zip(batch["image"], batch["scale"], batch["pad"], batch["orig_size"], strict=True):
            out = backend({"image": image[None]})
            keep = (out["labels"] >= 0) & (out["scores"] >= threshold)
            detections = {key: value[keep] for key, value in out.items()}
            detections["boxes"] = torch.from_numpy(unletterbox_boxes(detections["boxes"].numpy(), scale, pad, size))
            results.append(detections)
        return cls(results, outputs["labels"]["classes"])

    def json(self) -> dict[str, Any]:
        """Boxes above the score threshold, in the image's pixels."""
        det = self.detections[0]
        return {"detections": [{"label": self.classes[c], "score": s, "box": box} for c, s, box in
                               zip(det["labels"].tolist(), det["scores"].tolist(), det["boxes"].tolist(), strict=True)]}

    @classmethod
    def write(cls, writer: Any) -> Path:
        """``detections.csv`` (a row per box) and, unless ``draw=false``, ``images/<relative path>.png``."""
        detections = [det for record in writer.runs[0] for det in record.detections]
        classes = writer.runs[0][0].classes
        usable = [(item, det) for item, status, det in zip(writer.items, writer.status, detections, strict=True) if not status]
        rows = [[item["path"], classes[c], f"{s:.4f}", *(f"{v:.1f}" for v in box)] for item, det in usable
                for c, s, box in zip(det["labels"].tolist(), det["scores"].tolist(), det["boxes"].tolist(), strict=True)]
        for item, det in usable if writer.options.get("draw", True) else ():
            cls.save_drawing(writer, Path(item["path"]), det, classes)
        log.info("%d boxes in %d of %d usable images", len(rows), sum(len(det["labels"]) > 0 for _, det in usable),
                        len(usable))
        if usable and not rows:
            log.warning("no box scored above the score threshold in any of the %d images: lower "
                               "options.score_threshold or check the run's val/map_50", len(usable))
        return write_rows(writer.out_dir / "detections.csv", ["path", "label", "score", "xmin", "ymin", "xmax", "ymax"], rows)

    @staticmethod
    def save_drawing(writer: Any, path: Path, detections: dict[str, torch.Tensor], classes: list[str]) -> None:
        """``out_dir/images/<path relative to the input folder>.png``, sub-folders kept."""
        relative = path.relative_to(writer.source) if writer.source.is_dir() else Path(path.name)
        target = (writer.out_dir / "images" / relative).with_suffix(".png")
        target.parent.mkdir(parents=True, exist_ok=True)
        drawn = draw_detections(torch.from_numpy(load_image(path)).permute(2, 0, 1).contiguous(), detections, classes)
        cv2.imwrite(str(target), cv2.cvtColor(drawn.permute(1, 2, 0).numpy(), cv2.COLOR_RGB2BGR))

    @staticmethod
    def differences(expected: dict[str, Any], actual: dict[str, Any], score_tol: float = 1e-4) -> dict[str, float]:
        """Worst differences between each detection of ``expected`` and its counterpart in ``actual``, in any order.

        Two backends round differently by ~1e-7, so detections whose scores are tied within that noise may
        come out in either order, and one tied with the last kept score may be cut by either: only detections
        clearly above both cuts are paired (same label, nearest box); a missing counterpart is a difference of 1.
        """
        boxes, scores, labels = (np.asarray(expected[k]) for k in ("boxes", "scores", "labels"))
        other_boxes, other_scores, other_labels = (np.asarray(actual[k]) for k in ("boxes", "scores", "labels"))
        cut = max(scores.min(initial=0.0), other_scores.min(initial=0.0)) + score_tol
        worst = {"boxes": 0.0, "scores": 0.0, "labels": 0.0}
        for box, score, label in zip(boxes, scores, labels):
            candidates = np.flatnonzero((other_labels == label) & (other_scores > cut - 2 * score_tol))
            if score <= cut or not candidates.size:
                worst["labels"] = max(worst["labels"], float(score > cut))
                continue
            j = candidates[np.argmin(np.abs(other_boxes[candidates] - box).max(axis=1))]
            worst["boxes"] = max(worst["boxes"], float(np.abs(other_boxes[j] - box).max()))
            worst["scores"] = max(worst["scores"], float(abs(other_scores[j] - score)))
        return worst


@dataclass
class PairScores(Answer):
    """Per pair of a batch: ``scores`` [B] (``metric``: a pair model's ``probability``, the sigmoid of its logit, or
    the ``similarity`` of two embeddings) and the ``threshold`` from which a pair is "same"."""

    scores: torch.Tensor
    threshold: float
    metric: str = "probability"
    ROUTES: ClassVar = ("/compare",)
    UNUSABLE: ClassVar = {"score": None, "same": None}

    @classmethod
    def of(cls, backend: Any, batch: dict[str, Any], options: dict[str, Any]) -> PairScores:
        logit = next(iter(backend(batch).values()))
        return cls(torch.sigmoid(logit.reshape(-1)), float(backend.metadata["outputs"][0]["threshold"]))

    def json(self) -> dict[str, Any]:
        score = float(self.scores[0])
        return {"score": score, "same": score >= self.threshold, "threshold": self.threshold}

    @classmethod
    def write(cls, writer: Any) -> Path:
        """``predictions.csv`` for named pairs (``path1,path2,<probability|similarity>,same``; a pair with an
        unusable image: empty score, its status as ``same``), or for the consecutive rows of a pairs file
        ``pair_scores.csv`` (``pair_id,similarity``; ``with_decision``: ``same,threshold``)."""
        items, first = writer.items, writer.runs[0][0]
        if any(writer.status) and "pair_id" in items[0]:
            raise UserError(f"input: {sum(map(bool, writer.status))} pair(s) hold an image that cannot be used (see the "
                            "warnings above)")
        scores = torch.cat([record.scores for record in writer.runs[0]])
        same = (scores >= first.threshold).tolist()
        if "pair_id" in items[0]:
            decision = (same, first.threshold) if writer.options.get("with_decision") else (None, None)
            write_pair_scores(writer.out_dir / "pair_scores.csv", scores.tolist(), *decision)
            return writer.out_dir / "pair_scores.csv"
        rows = [[item["path1"], item["path2"], "", status] if status else [item["path1"], item["path2"], f"{p:.6f}", int(s)]
                for item, status, p, s in zip(items, writer.status, scores.tolist(), same, strict=True)]
        log.info("%s", ", ".join(f"{n} {answer}" for answer, n in Counter(
            {1: "same", 0: "different"}.get(row[3], row[3]) for row in rows).items())
                        + f" ({first.metric} >= {first.threshold:.4f})")
        return write_rows(writer.out_dir / "predictions.csv", ["path1", "path2", first.metric, "same"], rows)


@dataclass
class Embeddings(Answer):
    """A batch's ``embeddings`` [B, D] (L2-normalised); two show one person when their cosine >= the threshold."""

    embeddings: torch.Tensor
    OPTIONS: ClassVar = ("with_decision", "path_column")
    ROUTES: ClassVar = ("/predict", "/compare")
    UNUSABLE: ClassVar = {"embedding": None}

    @classmethod
    def of(cls, backend: Any, batch: dict[str, Any], options: dict[str, Any]) -> Embeddings | PairScores:
        """Each image's embedding; for pairs (``image1``, ``image2``), their cosine similarity as ``PairScores``."""
        def embed(key: str) -> torch.Tensor:
            return next(iter(backend({backend.input_names[0]: batch[key]}).values()))

        if "image1" not in batch:
            return cls(embed("image"))
        threshold = float(backend.metadata["outputs"][0]["threshold"])
        return PairScores((embed("image1") * embed("image2")).sum(1), threshold, "similarity")

    def json(self) -> dict[str, Any]:
        return {"embedding": self.embeddings[0].tolist()}


ANSWERS: dict[str, type[Answer]] = {kind.__name__: kind for kind in (ClassScores, Detections, PairScores, Embeddings)}


def answer_type(metadata: dict[str, Any]) -> type[Answer]:
    """The record type an export's metadata names."""
    kind = ANSWERS.get(str(metadata.get("answer")))
    if kind is None:
        raise UserError(f"the export's metadata names no known answer ({metadata.get('answer')!r}, known: "
                        f"{', '.join(ANSWERS)}); export the run again (bin/export.py)")
    return kind


@dataclass
class Output:
    """One named model output: ``activation`` already applied in the graph (softmax | sigmoid | None for raw
    values: logits, embeddings, boxes), the decision ``threshold`` and the ``classes`` it scores."""

    name: str
    activation: str | None = None
    threshold: float | None = None
    classes: list[str] | None = None


@dataclass
class Route:
    """A task's own HTTP route: ``POST path`` answers ``output``'s decided class under the key ``answer``."""

    path: str
    output: str
    answer: str = "answer"


@dataclass
class ExportSpec:
    """What to write to ONNX and how to read it back: the module and example inputs, its named outputs, the
    ``answer`` record type its outputs make, task routes and free ``metadata`` (preprocessing facts)."""

    module: nn.Module
    inputs: dict[str, torch.Tensor]
    outputs: list[Output]
    answer: type[Answer] = ClassScores
    metadata: dict[str, Any] = field(default_factory=dict)
    routes: list[Route] = field(default_factory=list)
    # Batch axis 0 of every input and output is dynamic unless the export is fixed-size (``dynamic=False``).
    dynamic: bool = True
    parity_tolerance: dict[str, float] = field(default_factory=dict)
    export_options: dict[str, Any] = field(default_factory=dict)

    @property
    def output_names(self) -> list[str]:
        return [output.name for output in self.outputs]

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        names = [*self.inputs, *self.output_names] if self.dynamic else []
        return {name: {0: "batch"} for name in names}

    def onnx_metadata(self) -> dict[str, Any]:
        """Everything a reader of the ONNX file needs: the free metadata, the answer, outputs and routes."""
        return {**self.metadata, "answer": self.answer.__name__, "outputs": [asdict(o) for o in self.outputs],
                "routes": [asdict(r) for r in self.routes]}
