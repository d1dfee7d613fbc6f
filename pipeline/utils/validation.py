"""Typed checks of the config keys users type, run on the composed config before any work starts.

One table, ``RULES``, maps each key to what it accepts (a pydantic type and the words that say it);
a key the composed config does not have (another experiment's, a command's) is skipped. A wrong
value is a UserError naming the key, the value and what is allowed, e.g.
``trainer.max_epochs=-1: expected an integer >= 1``.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, ConfigTypeError, InterpolationResolutionError
from PIL import Image
from pydantic import AfterValidator, Field, StrictBool, StrictStr, TypeAdapter, ValidationError

from pipeline.utils.errors import UserError

# Upper bounds where a larger value crashes (memory, processes, numpy's 32-bit seeds) instead of being slow.
MAX_COUNT = 2**31 - 1
MAX_BATCH = 65536
MAX_PIXELS = 8192
MAX_WORKERS = 256
MAX_SEED = 2**32 - 1
# Pillow refuses larger images as decompression bombs (twice its warning limit).
PILLOW_PIXEL_LIMIT = 2 * Image.MAX_IMAGE_PIXELS
HOST_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
# Keys that moved: a command line with the old name gets the new one in its error line, and a YAML file
# that still sets one (which Hydra merges without complaint) is refused by ``validate_config``.
RENAMED = {"hyp.epochs": "trainer.max_epochs", "task.detector": "model", "data.augment.crop": "data.crop",
           "data.augment.min_visibility": "data.min_visibility",
           **{f"hyp.{key}": f"trainer.{key}" for key in ("precision", "gradient_clip_val", "accumulate_grad_batches")},
           **{f"task.{key}": f"model.{key}" for key in ("fpn_channels", "head_convs", "min_score", "nms_threshold",
                                                        "detections_per_img", "min_stride")}}
# Lightning's precision names (its integer aliases too), and ``auto`` (pipeline.trainers.engine.resolve_precision).
PRECISIONS = ("auto", "32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64-true", "transformer-engine",
              "transformer-engine-float16", 64, 32, 16, "64", "32", "16", "bf16")


def _host(value: str) -> str:
    """An IP address, or a host name of letters, digits, ``-`` and ``.`` (RFC 1123) that is not a dotted number."""
    try:
        ipaddress.ip_address(value)
        return value
    except ValueError:
        pass
    labels = value.rstrip(".").split(".")
    if len(value) > 253 or not all(HOST_LABEL.fullmatch(label) for label in labels) or labels[-1].isdigit():
        raise ValueError("not a host")
    return value


def _writable_folder(value: str | None) -> str | None:
    """A folder that exists and is writable, or one that can be made: its nearest existing parent is a writable
    folder (checked before any work, so a bad ``out=`` fails at once)."""
    if value is None:
        return value
    probe = Path(value).expanduser().absolute()
    if probe.is_file():
        return value  # the command's own check says it is a file, not a folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise ValueError("not writable")
    if probe != Path(value).expanduser().absolute() and str(probe).startswith(("/proc", "/sys")):
        raise ValueError("a kernel file system")
    return value


def _int(ge: int, le: int = MAX_COUNT) -> Any:
    return Annotated[int, Field(strict=True, ge=ge, le=le)]


def _number(**bounds: float) -> Any:
    return Annotated[float, Field(strict=True, allow_inf_nan=False, **bounds)]


@dataclass(frozen=True)
class Rule:
    """What a key accepts: a pydantic type and its description for the error line."""

    type: Any
    allowed: str

    @functools.cached_property
    def adapter(self) -> TypeAdapter:
        return TypeAdapter(self.type)

    def check(self, key: str, value: Any) -> None:
        try:
            self.adapter.validate_python(value)
        except ValidationError:
            raise UserError(f"{key}={json.dumps(value, default=str)}: expected {self.allowed}") from None

    def or_null(self) -> Rule:
        return Rule(self.type | None, f"{self.allowed}, or null")


COUNT = Rule(_int(1), "an integer >= 1")
ZERO_OR_MORE = Rule(_int(0), "an integer >= 0")
BATCH = Rule(_int(1, MAX_BATCH), f"an integer in [1, {MAX_BATCH}]")
WORKERS = Rule(_int(0, MAX_WORKERS) | Literal["auto"], f"auto or an integer in [0, {MAX_WORKERS}]")
SEED = Rule(_int(0, MAX_SEED), f"an integer in [0, {MAX_SEED}]")
PIXELS = _int(1, MAX_PIXELS)
SIDE = Rule(PIXELS, f"one side of a square in pixels, an integer in [1, {MAX_PIXELS}]")
HEIGHT_WIDTH = Rule(Annotated[list[PIXELS], Field(min_length=2, max_length=2)],
                    f"[height, width] in pixels, each an integer in [1, {MAX_PIXELS}]")
TRANSFORMS = Rule(list[dict[str, Any]] | None, "a list of transforms ({_target_: ..., ...} each), or null")
POSITIVE = Rule(_number(gt=0), "a finite number > 0")
NON_NEGATIVE = Rule(_number(ge=0), "a finite number >= 0")
FRACTION = Rule(_number(ge=0, le=1), "a number in [0, 1]")
BELOW_ONE = Rule(_number(ge=0, lt=1), "a number in [0, 1)")
FLAG = Rule(StrictBool, "true or false")
BATCHES = Rule(_int(0) | _number(ge=0, le=1), "a number of batches (an integer >= 0) or a fraction in [0, 1]")
NAME = Rule(StrictStr, "a name (a string; quote digits: '2024')")
PATH = Rule(StrictStr | None, "a path, or null (a string; quote digits: '2024')")
NORMALISATION = Rule(Annotated[list[_number()], Field(min_length=3, max_length=3)], "3 numbers, one per RGB channel")

# (rule, keys). Order matters only for which of two wrong keys is named: the keys users type come
# before the ones that interpolate them (hyp.batch_size before data.batch_size).
TABLE: tuple[tuple[Rule, str], ...] = (
    (NAME, "data._target_ task._target_ model._target_"),
    (SEED, "seed data.seed data.synthetic.seed callbacks.epoch_reseed.seed"),
    (COUNT, "trainer.max_epochs trainer.accumulate_grad_batches "
            "trainer.log_every_n_steps data.passes data.images_per_identity data.train_size data.val_size "
            "data.synthetic.num_people data.synthetic.num_images data.synthetic.num_identities "
            "data.synthetic.images_per_identity data.synthetic.num_photos hyp.scheduler.T_max "
            "hyp.scheduler.step_size model.embedding_dim model.detections_per_img model.fpn_channels "
            "callbacks.verification_report.max_plot_points samples rounds steps runs"),
    (COUNT.or_null(), "trainer.check_val_every_n_epoch threads max_concurrency"),
    (Rule(_int(1, 65535), "an integer in [1, 65535]"), "port"),
    (Rule(Annotated[StrictStr, AfterValidator(_host)], "an IP address (127.0.0.1, 0.0.0.0, ::1) or a host name"), "host"),
    (Rule(Annotated[StrictStr, AfterValidator(_writable_folder)] | None,
          "a folder you can write, or one that can be created there (its nearest existing parent is a writable "
          "folder), or null"), "out"),
    (Rule(_int(1, PILLOW_PIXEL_LIMIT), f"an integer in [1, {PILLOW_PIXEL_LIMIT}] (Pillow refuses larger images)"),
     "max_pixels"),
    (Rule(Annotated[str, Field(min_length=1)] | None, "a non-empty string (quote digits), or null: then "
          "$PIPELINE_API_KEY, if set"), "api_key"),
    (ZERO_OR_MORE, "max_queue data.test_size data.synthetic.fakes_per_identity data.min_box_size model.head_convs "
                   "task.example_count callbacks.verification_report.projector_size warmup callbacks.progress_bar.refresh_rate "
                   "callbacks.early_stopping.patience"),
    (Rule(Literal[-1] | _int(1), "an integer >= 1, or -1 (no step limit)"), "trainer.max_steps"),
    (Rule(_int(-1), "an integer >= 0, or -1 (all)"), "trainer.num_sanity_val_steps callbacks.model_checkpoint.save_top_k"),
    (BATCH, "hyp.batch_size data.batch_size data.eval_batch_size batch"),
    (BATCH.or_null(), "options.batch_size"),
    (WORKERS, "data.num_workers"),
    (SIDE, "data.image_size data.synthetic.image_size"),
    (POSITIVE, "max_upload_mb hyp.optimizer.lr hyp.scheduler.gamma hyp.identity_head_scale data.repeat_threshold tolerance"),
    (NON_NEGATIVE, "hyp.optimizer.weight_decay hyp.scheduler.eta_min hyp.loss.margin hyp.loss.gamma "
                   "hyp.loss.lambda_fake hyp.identity_head_weight hyp.identity_head_margin data.margin data.face_margin "
                   "data.split.train data.split.val data.split.test"),
    (NON_NEGATIVE.or_null(), "trainer.gradient_clip_val"),
    (FRACTION, "hyp.loss.label_smoothing hyp.optimizer.momentum hyp.scheduler.pct_start task.threshold "
               "task.score_threshold model.min_score model.nms_threshold data.min_share data.max_share "
               "data.min_visibility"),
    (Rule(_number(ge=0, le=1) | Literal["best"], "a number in [0, 1] or best (the run's saved best-F1 threshold)")
     .or_null(), "options.score_threshold score_threshold"),
    (BELOW_ONE, "model.head.dropout"),
    (Rule(_int(0, 64), "an integer in [0, 64] (bits of a 64-bit hash)"), "near_distance"),
    (NON_NEGATIVE, "near_pixel_difference"),
    (BATCHES, "trainer.limit_train_batches trainer.limit_val_batches trainer.limit_test_batches "
              "trainer.overfit_batches"),
    (Rule(StrictBool | _int(0), "true, false or a number of batches >= 0"), "trainer.fast_dev_run"),
    (Rule(StrictBool | Literal["warn"], "true, false or warn"), "trainer.deterministic"),
    (FLAG, "data.skip_bad_files data.check_images data.detect_face data.rotate model.pretrained model.flip_average "
           "hyp.channels_last hyp.compile test_after_train"),
    (NAME, "name task.monitor data.format data.sampler data.target data.unknown_class model.name "
           "trainer.accelerator model.backbone data.images_dir data.annotations_dir"),
    (NAME.or_null(), "callbacks.monitor_guard.fallback optimized_metric task.tta"),
    (Rule(StrictStr, "a path (a string; quote digits: '2024')"), "paths.results_dir paths.data_dir paths.cache_dir "
                                                                  "paths.decoded_dir"),
    (PATH, "data.root data.cache_dir data.split_file "
           "data.split_out data.list_file data.face_model data.label_corrections data.landmarks_csv model.weights"),
    (Rule(Literal["min", "max"], "min or max"), "task.monitor_mode"),
    (PATH, "model.init_from model.init_ckpt model.init_prefix"),
    (Rule(Literal["warn", "refuse"], "warn or refuse"), "model.init_leak"),
    (Rule(dict[StrictStr, StrictStr] | None, "a mapping {old key prefix: new key prefix}, or null"), "model.init_key_map"),
    (ZERO_OR_MORE, "hyp.freeze_backbone_epochs"),
    (POSITIVE, "hyp.backbone_lr_mult"),
    (Rule(Literal[PRECISIONS], "auto or a Lightning precision (32-true, 16-mixed, bf16-mixed, 16-true, bf16-true, 64-true...)"), "trainer.precision"),
    (Rule(Literal["auto", "disk", "memory", "none"], "auto, disk, memory or none"), "data.cache"),
    (PATH, "data.decoded_dir"),
    (Rule(Literal["step", "epoch"], "step or epoch"), "hyp.scheduler.interval callbacks.lr_monitor.logging_interval"),
    (Rule(list[StrictStr] | None, "a list of names, or null"), "data.class_names"),
    (TRANSFORMS, "data.augment"),
    (NORMALISATION, "data.mean"),
    (Rule(Annotated[list[_number(gt=0)], Field(min_length=3, max_length=3)], "3 numbers > 0, one per RGB channel"),
     "data.std"),
    (Rule(Annotated[list[_int(1)], Field(max_length=64)], "a list of integers >= 1"), "model.head.hidden_dims model.kwargs.widths"),
    (Rule(PIXELS, f"an integer in [1, {MAX_PIXELS}]").or_null(), "data.crop"),
)
RULES: dict[str, Rule] = {key: rule for rule, keys in TABLE for key in keys.split()}
# Where a reader (a data._target_ under this module) takes another shape than the table's.
READER_RULES: dict[tuple[str, str], Rule] = {
    (key, reader): HEIGHT_WIDTH for key in ("data.image_size", "data.synthetic.image_size")
    for reader in ("pipeline.data.classification.", "pipeline.data.face_attributes.")
}
_ABSENT = object()


def validate_config(cfg: DictConfig) -> None:
    """Check every key of ``RULES`` that ``cfg`` has; UserError naming the first wrong one, or the first
    moved key (``RENAMED``) still set."""
    refuse_moved_keys(cfg)
    for key, rule in RULES.items():
        try:
            value = OmegaConf.select(cfg, key, default=_ABSENT)
        except (ConfigKeyError, ConfigTypeError):  # a parent of another shape (a list, a value)
            continue
        except InterpolationResolutionError:
            if HydraConfig.initialized():
                raise
            continue  # before the run exists (``${hydra:runtime.output_dir}``): checked again in the job
        if value is _ABSENT:
            continue
        rule = next((special for (special_key, reader), special in READER_RULES.items()
                     if key == special_key and reader_of(cfg).startswith(reader)), rule)
        rule.check(key, OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value)


def refuse_moved_keys(cfg: DictConfig) -> None:
    """UserError for an old key name a config file still sets, which would otherwise be ignored; a run saved
    before the move keeps it where the new key interpolates it (``trainer.max_epochs: ${hyp.epochs}``)."""
    for old, new in RENAMED.items():
        parent, _, leaf = old.rpartition(".")
        node = OmegaConf.select(cfg, parent, default=None)
        if not isinstance(node, DictConfig) or leaf not in node:
            continue
        new_parent, _, new_leaf = new.rpartition(".")
        new_node = OmegaConf.select(cfg, new_parent, default=None)
        if isinstance(new_node, DictConfig) and new_leaf in new_node and \
                OmegaConf.to_container(new_node, resolve=False).get(new_leaf) == "${" + old + "}":
            continue
        raise UserError(f"{old} is now {new}: set {new} in your config file or on the command line "
                        f"(the old key would be ignored)")


def reader_of(cfg: DictConfig) -> str:
    """The ``_target_`` of the config's datamodule ('' without one)."""
    return str(OmegaConf.select(cfg, "data._target_", default="") or "")
