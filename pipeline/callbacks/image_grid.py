"""Image grids of predictions with truth, logged to TensorBoard and saved as PNG in results/."""

from __future__ import annotations

import io
import math
from collections import Counter
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import cv2
import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_only
from torchvision.utils import make_grid

from pipeline.callbacks.figure_budget import figure_budget
from pipeline.utils.trackers import tracker_stage

GREEN, RED = (40, 200, 40), (230, 40, 40)


def rendered(figure: Any) -> np.ndarray:
    """A matplotlib figure drawn once, as an HxWx3 uint8 RGB array (what ``savefig`` at the figure's dpi writes)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.ascontiguousarray(np.asarray(canvas.buffer_rgba())[..., :3])


PNG_COMPRESSION = 1  # zlib level: 1 encodes a figure about twice as fast as Pillow's 6, for a file about 10% larger


def encode_png(image: np.ndarray, title: str | None = None, description: str | None = None) -> bytes:
    """An HWC uint8 RGB image as PNG bytes, with ``title`` and ``description`` in its metadata where given
    (``PIL.Image.open(path).info["Title"]``)."""
    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    for key, value in (("Title", title), ("Description", description)):
        if value is not None:
            info.add_text(key, value)
    out = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(out, format="PNG", pnginfo=info, compress_level=PNG_COMPRESSION)
    return out.getvalue()


def image_summary(tag: str, image: np.ndarray, png: bytes) -> Any:
    """A TensorBoard image summary of already encoded ``png`` bytes (``add_image`` would encode ``image`` again)."""
    from tensorboard.compat.proto.summary_pb2 import Summary

    height, width = image.shape[:2]
    encoded = Summary.Image(height=height, width=width, colorspace=3, encoded_image_string=png)
    return Summary(value=[Summary.Value(tag=tag, image=encoded)])


def publish(trainer: pl.Trainer, tag: str, image: np.ndarray, step: int, path: Path, title: str | None = None,
            description: str | None = None) -> None:
    """An HWC uint8 RGB image to every logger that takes images (``tag`` at ``step``) and to ``path`` as PNG: one
    drawing and one encoding serve both."""
    # Imported here: predict and serve import this module, not TensorBoard.
    from torch.utils.tensorboard import SummaryWriter

    png = encode_png(image, title, description)
    for logger in trainer.loggers:
        writer = logger.experiment
        if isinstance(writer, SummaryWriter):  # torch's SummaryWriter: the encoded bytes as they are
            writer._get_file_writer().add_summary(image_summary(tag, image, png), step)
        elif hasattr(writer, "add_image"):  # another writer, or fast_dev_run's dummy logger
            writer.add_image(tag, image, step, dataformats="HWC")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png)


def denormalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Undo ``Normalize``: NCHW float -> NCHW uint8 in [0, 255]."""
    mean_t = torch.as_tensor(mean, dtype=images.dtype).view(1, -1, 1, 1)
    std_t = torch.as_tensor(std, dtype=images.dtype).view(1, -1, 1, 1)
    return ((images * std_t + mean_t).clamp(0, 1) * 255).round().to(torch.uint8)


FONT, FONT_SCALE, LINE_HEIGHT = cv2.FONT_HERSHEY_SIMPLEX, 0.4, 14


def caption_width(text: str) -> int:
    """Pixel width of the widest line of ``text`` as ``annotated_grid`` draws it."""
    return max(cv2.getTextSize(line, FONT, FONT_SCALE, 1)[0][0] for line in text.split("\n"))


def annotated_grid(images: torch.Tensor, labels: Sequence[tuple[str, bool]], min_width: int = 128) -> torch.Tensor:
    """Upscale each NCHW uint8 tile, frame it green (correct) or red (wrong) and caption it above the
    image; captions may hold several lines (``\n``), e.g. truth and prediction. Every tile is widened
    to its grid's longest caption line, so no text is cut off. Returns a CHW grid."""
    width = max([min_width] + [caption_width(text) + 8 for text, _ in labels])
    tiles = []
    for image, (text, correct) in zip(images, labels):
        tile = image.permute(1, 2, 0).numpy()
        scale = max(1, int(np.ceil(min_width / tile.shape[1])))
        tile = cv2.resize(tile, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
        lines = text.split("\n")
        side = max(0, width - tile.shape[1])
        tile = cv2.copyMakeBorder(tile, 0, 0, side // 2, side - side // 2, cv2.BORDER_CONSTANT, value=(0, 0, 0))
        colour = GREEN if correct else RED
        tile = cv2.copyMakeBorder(tile, 4 + LINE_HEIGHT * len(lines), 3, 3, 3, cv2.BORDER_CONSTANT, value=colour)
        for row, line in enumerate(lines):
            cv2.putText(tile, line, (4, LINE_HEIGHT * (row + 1) - 1), FONT, FONT_SCALE, (255, 255, 255), 1, cv2.LINE_AA)
        tiles.append(torch.from_numpy(np.ascontiguousarray(tile)).permute(2, 0, 1))
    return make_grid(tiles, nrow=int(np.ceil(np.sqrt(len(tiles)))), padding=4)


# --- examples sampled across classes ---------------------------------------------------------------
def choose_slot(kept: Sequence[Collection[int]], classes: Collection[int], count: int) -> int | None:
    """Where an evaluation item showing ``classes`` goes among the ``kept`` items' classes (at most ``count``):
    ``len(kept)`` (appended) while there is room; then the slot of a kept item of no class (an image without
    boxes: they only fill room), else that of a kept item whose every class is shown at
    least two more times than the new item's least-shown class (so no class falls below it), the most
    shown such item, the latest of those; None to leave it out. Streaming over an epoch in order, every
    class present gets a tile when ``count`` allows, and the classes end within one tile of each other
    (sorted class folders no longer fill every tile with the first class)."""
    if len(kept) < count:
        return len(kept)
    if not classes:
        return None
    empty = [slot for slot, item in enumerate(kept) if not item]
    if empty:  # an item of no class (an image without boxes) only fills room
        return empty[-1]
    shown = Counter(c for item in kept for c in set(item))
    need = min(shown.get(c, 0) for c in classes)
    best, best_min = None, None
    for slot, item in enumerate(kept):
        if item and all(shown[c] >= need + 2 for c in item):
            low = min(shown[c] for c in item)
            if best_min is None or low >= best_min:
                best, best_min = slot, low
    return best


def item_at(values: dict[str, Any], index: int, size: int, prefix: str = "") -> dict[str, Any]:
    """Item ``index`` (on CPU, batch dimension kept) of every batched tensor (first dimension ``size``) or
    list of tensor dicts in ``values``."""
    kept = {}
    for key, value in values.items():
        if isinstance(value, torch.Tensor) and value.ndim and len(value) == size:
            kept[prefix + key] = value[index:index + 1].detach().cpu()
        elif isinstance(value, list) and len(value) == size and value and isinstance(value[0], dict):
            kept[prefix + key] = [{k: v.detach().cpu() for k, v in value[index].items()}]
    return kept


def stack_items(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """``item_at`` results joined into one batch per key (keys every item has)."""
    keys = set.intersection(*(set(item) for item in items)) if items else set()
    return {key: torch.cat([item[key] for item in items]) if isinstance(items[0][key], torch.Tensor)
            else [entry for item in items for entry in item[key]] for key in sorted(keys)}


class ExampleSampler:
    """The examples of one evaluation epoch, chosen across classes with ``choose_slot`` from every batch (not
    the first items of the first batch); ``batch()`` gives them ordered by class, as ``first_items`` did."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.slots: list[tuple[frozenset[int], int, dict[str, Any]]] = []  # (classes, arrival order, item)
        self.seen = 0

    def offer(self, classes: Sequence[Collection[int]], take: Any) -> bool:
        """``classes[i]``: the classes item ``i`` of a batch shows; ``take(i)`` its tensors (``item_at``).
        True when a kept example changed."""
        changed = False
        for index, item_classes in enumerate(classes):
            item_classes = frozenset(int(c) for c in item_classes)
            slot = choose_slot([kept for kept, _, _ in self.slots], item_classes, self.count)
            self.seen += 1
            if slot is None:
                continue
            entry = (item_classes, self.seen, take(index))
            if slot == len(self.slots):
                self.slots.append(entry)
            else:
                self.slots[slot] = entry
            changed = True
        return changed

    def chosen_classes(self) -> list[frozenset[int]]:
        return [classes for classes, _, _ in self.ordered()]

    def ordered(self) -> list[tuple[frozenset[int], int, dict[str, Any]]]:
        return sorted(self.slots, key=lambda entry: (min(entry[0], default=-1), entry[1]))

    def batch(self) -> dict[str, Any]:
        return stack_items([item for _, _, item in self.ordered()])


# --- labelled ground truth vs prediction (detection) ---------------------------------------------------
def class_colour(index: int) -> tuple[int, int, int]:
    """RGB of class ``index``: matplotlib's tab10 (then tab20), the colours its legends use."""
    from matplotlib import colormaps

    cmap = colormaps["tab10"] if index < 10 else colormaps["tab20"]
    r, g, b, _ = cmap(index % cmap.N)
    return int(r * 255), int(g * 255), int(b * 255)


def box_draw_list(boxes: torch.Tensor, labels: torch.Tensor, class_names: Sequence[str],
                  scores: torch.Tensor | None = None) -> list[tuple[list[float], str, tuple[int, int, int]]]:
    """What ``draw_boxes`` draws: ``(xyxy box, caption, RGB colour)`` per box; the caption is the class name
    (ground truth) or ``<name> <score>`` (predictions), the colour the class's (``class_colour``)."""
    out = []
    for index, (box, label) in enumerate(zip(boxes.tolist(), labels.tolist(), strict=True)):
        name = class_names[label] if 0 <= label < len(class_names) else str(label)
        caption = name if scores is None else f"{name} {float(scores[index]):.2f}"
        out.append((box, caption, class_colour(label)))
    return out


def draw_boxes(image: np.ndarray, draw_list: Sequence[tuple[list[float], str, tuple[int, int, int]]], scale: float = 1.0,
               thickness: int = 2) -> np.ndarray:
    """Boxes (scaled by ``scale``) with their caption on a filled label in the box's colour, on an HWC uint8 RGB copy."""
    image = np.ascontiguousarray(image).copy()
    height, width = image.shape[:2]
    for box, caption, colour in draw_list:
        x1, y1, x2, y2 = (int(round(v * scale)) for v in box)
        cv2.rectangle(image, (x1, y1), (x2, y2), colour, thickness)
        (text_w, text_h), base = cv2.getTextSize(caption, FONT, FONT_SCALE, 1)
        top = y1 - text_h - base - 2 if y1 - text_h - base - 2 >= 0 else min(y2, height - text_h - base - 2)
        left = min(max(x1, 0), max(0, width - text_w - 2))
        cv2.rectangle(image, (left, top), (left + text_w + 2, top + text_h + base + 2), colour, -1)
        light = sum(colour) > 450
        cv2.putText(image, caption, (left + 1, top + text_h + 1), FONT, FONT_SCALE, (0, 0, 0) if light else (255, 255, 255),
                    1, cv2.LINE_AA)
    return image


def _caption_bar(text: str, width: int, colour: tuple[int, int, int] = (40, 40, 40)) -> np.ndarray:
    bar = np.full((LINE_HEIGHT + 6, width, 3), colour, dtype=np.uint8)
    cv2.putText(bar, text, (4, LINE_HEIGHT + 1), FONT, FONT_SCALE, (255, 255, 255), 1, cv2.LINE_AA)
    return bar


def truth_and_prediction(image: torch.Tensor, truth: dict[str, torch.Tensor], detections: dict[str, torch.Tensor],
                         class_names: Sequence[str], max_side: int = 384, min_side: int = 256) -> np.ndarray:
    """One example: the CHW uint8 image twice, side by side, with its true boxes (``ground truth``, class names)
    and its predicted ones (``prediction``, name and score), each box in its class's colour, the long side
    scaled into [min_side, max_side]; HWC uint8."""
    picture = image.permute(1, 2, 0).numpy()
    long_side = max(picture.shape[:2])
    scale = max_side / long_side if long_side > max_side else max(1.0, min_side / long_side)
    if scale != 1.0:
        picture = cv2.resize(picture, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    panels = []
    for title, draw_list in (("ground truth", box_draw_list(truth["boxes"], truth["labels"], class_names)),
                             ("prediction", box_draw_list(detections["boxes"], detections["labels"], class_names,
                                                          detections["scores"]))):
        drawn = draw_boxes(picture, draw_list, scale)
        panels.append(np.concatenate([_caption_bar(f"{title} ({len(draw_list)})", drawn.shape[1]), drawn]))
    gap = np.full((panels[0].shape[0], 4, 3), 255, dtype=np.uint8)
    return np.concatenate([panels[0], gap, panels[1]], axis=1)


def legend_bar(class_names: Sequence[str], width: int, note: str = "") -> np.ndarray:
    """A strip naming every class in its colour (as ``box_draw_list`` draws it), then ``note``; wrapped to ``width``."""
    rows, row, x = [], [], 6
    entries = [(name, class_colour(index)) for index, name in enumerate(class_names)] + ([(note, None)] if note else [])
    for name, colour in entries:
        entry_w = caption_width(name) + (22 if colour else 6)
        if row and x + entry_w > width:
            rows.append(row)
            row, x = [], 6
        row.append((x, name, colour))
        x += entry_w + 10
    rows.append(row)
    bar = np.full((len(rows) * (LINE_HEIGHT + 6) + 4, width, 3), 255, dtype=np.uint8)
    for r, entries_of_row in enumerate(rows):
        y = r * (LINE_HEIGHT + 6) + 4
        for x, name, colour in entries_of_row:
            if colour:
                cv2.rectangle(bar, (x, y + 2), (x + 14, y + LINE_HEIGHT - 2), colour, -1)
                x += 20
            cv2.putText(bar, name, (x, y + LINE_HEIGHT - 3), FONT, FONT_SCALE, (0, 0, 0), 1, cv2.LINE_AA)
    return bar


def detection_grid(examples: Sequence[np.ndarray], class_names: Sequence[str], note: str = "") -> torch.Tensor:
    """``truth_and_prediction`` tiles in a grid (one or two per row) above the class legend; CHW uint8."""
    tiles = [torch.from_numpy(np.ascontiguousarray(tile)).permute(2, 0, 1) for tile in examples]
    height = max(t.shape[1] for t in tiles)
    width = max(t.shape[2] for t in tiles)
    tiles = [torch.nn.functional.pad(t, (0, width - t.shape[2], 0, height - t.shape[1]), value=255) for t in tiles]
    grid = make_grid(tiles, nrow=2 if len(tiles) > 2 else 1, padding=6, pad_value=255)
    legend = torch.from_numpy(legend_bar(class_names, grid.shape[2], note)).permute(2, 0, 1)
    return torch.cat([grid, legend], dim=1)


def epoch_name(epoch: int | None) -> str:
    """``epoch 2``: Lightning's 0-based ``current_epoch``, the number in the checkpoint's name (``epoch002.ckpt``)
    and in ``metrics_history.json``, ``results.csv``, the report and the final table."""
    return f"epoch {epoch}" if epoch is not None else "untrained weights"


class TestedWeights(pl.Callback):
    """Knows the epoch and step of the weights a stage evaluates; at test, those of the tested checkpoint (its
    ``epoch`` and ``global_step`` keys: Lightning restores the weights, not the trainer's epoch counter)."""

    _loaded: tuple[int, int] | None = None

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        self._loaded = int(checkpoint["epoch"]), int(checkpoint["global_step"])

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """The first such callback logs the tested weights' ``epoch`` and ``step`` with the test metrics: Lightning then
        writes them at that step, with that epoch, in every logger (else at the trainer's last step, or 0)."""
        epoch, step = self.weights_of(trainer, "test")
        if epoch is not None and self is next(c for c in trainer.callbacks if isinstance(c, TestedWeights)):
            pl_module.log_dict({"epoch": float(epoch), "step": float(step)}, batch_size=1)

    def weights_of(self, trainer: pl.Trainer, stage: str) -> tuple[int | None, int]:
        """``(epoch, step)``: validation's current ones; at test the loaded checkpoint's, or without one the last
        trained epoch's (None before any training)."""
        if stage != "test":
            return trainer.current_epoch, trainer.global_step
        if trainer.ckpt_path and self._loaded is not None:
            return self._loaded
        return (trainer.current_epoch - 1 if trainer.current_epoch else None), trainer.global_step


class BestEpochFigures(TestedWeights):
    """Figures drawn after the validation epochs that improve the checkpoint's monitored metric (so
    ``results/val_*.png`` and TensorBoard show the model that test uses, and an epoch that does not
    improve costs no drawing), and after test. ``collect`` runs on every process at the epoch's end
    (it may gather across processes); ``draw`` on rank 0, once the epoch's metrics are known. Within the
    trainer's ``FigureBudget``: an improving epoch over budget waits, and the last one waiting is drawn
    when training ends (with its own epoch in the title)."""

    def __init__(self, out_dir: str | Path) -> None:
        self.out_dir = Path(out_dir)
        self._best: float | None = None
        self._pending: Any = None
        self._waiting: tuple[Any, tuple[int, int]] | None = None  # collected, (epoch, step) of an undrawn improvement
        self._drawing: tuple[int, int] | None = None

    def collect(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> Any:
        return stage

    def draw(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str, collected: Any) -> None:
        raise NotImplementedError

    def on_validation_epoch_end(self, trainer, pl_module):
        self._pending = None if trainer.sanity_checking else self.collect(trainer, pl_module, "val")

    def on_validation_end(self, trainer, pl_module):
        pending, self._pending = self._pending, None
        if pending is not None and self.improved(trainer):
            self._waiting = pending, (trainer.current_epoch, trainer.global_step)
            self.draw_waiting(trainer, pl_module, figure_budget(trainer).allows(self.figure_kind))

    def on_train_end(self, trainer, pl_module):
        self.draw_waiting(trainer, pl_module, True)

    def draw_waiting(self, trainer: pl.Trainer, pl_module: pl.LightningModule, now: bool) -> None:
        """Draw the waiting improvement's figures when ``now``, as of its own epoch and step (``weights_of``)."""
        if self._waiting is None or not now:
            return
        (collected, self._drawing), self._waiting = self._waiting, None
        try:
            with figure_budget(trainer).drawing(self.figure_kind):
                rank_zero_only(self.draw)(trainer, pl_module, "val", collected)
        finally:
            self._drawing = None

    @property
    def figure_kind(self) -> str:
        """What ``FigureBudget`` times this callback's drawings as."""
        return type(self).__name__

    def weights_of(self, trainer: pl.Trainer, stage: str) -> tuple[int | None, int]:
        return self._drawing if stage == "val" and self._drawing else super().weights_of(trainer, stage)

    def on_test_epoch_end(self, trainer, pl_module):
        collected = self.collect(trainer, pl_module, "test")
        if collected is not None:
            rank_zero_only(self.draw)(trainer, pl_module, "test", collected)

    def improved(self, trainer: pl.Trainer) -> bool:
        """Whether this epoch beats the best so far on the checkpoint's monitor (true without one, or while
        it is not finite: the monitor guard then decides)."""
        checkpoint = trainer.checkpoint_callback
        value = trainer.callback_metrics.get(checkpoint.monitor) if checkpoint is not None and checkpoint.monitor else None
        if value is None or not math.isfinite(float(value)):
            return True
        value = float(value)
        if self._best is not None and (value <= self._best if checkpoint.mode == "max" else value >= self._best):
            return False
        self._best = value
        return True


class PredictionGrid(BestEpochFigures):
    """``<stage>/predictions`` in TensorBoard (``z_test/predictions`` at test: ``tracker_stage``) and ``<out_dir>/<stage>_predictions.png`` from the task's
    ``render_examples(stage)`` (validation: the improving epochs, see ``BestEpochFigures``), of the examples
    the epoch kept (``collect``: each epoch keeps new ones, so a waiting figure draws its own epoch's)."""

    def collect(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> Any:
        examples = getattr(pl_module, "examples", None)
        return examples.get(stage) if hasattr(pl_module, "render_examples") and isinstance(examples, dict) else None

    def draw(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str, collected: Any) -> None:
        latest = pl_module.examples.get(stage)
        pl_module.examples[stage] = collected
        try:
            grid = pl_module.render_examples(stage)
        finally:
            pl_module.examples.pop(stage)
            if latest is not None:
                pl_module.examples[stage] = latest
        if grid is None:
            return
        epoch, step = self.weights_of(trainer, stage)
        publish(trainer, f"{tracker_stage(stage)}/predictions", grid.permute(1, 2, 0).numpy(), step,
                self.out_dir / f"{stage}_predictions.png", f"{stage} predictions ({epoch_name(epoch)})")
