"""A detector's score threshold at delivery: ``best`` is the run's saved best-F1 threshold (its test writes
``results/detection_threshold.json``), the default when the run has one; a run without it says so in one line."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from pipeline.delivery.answers import ClassScores, Detections, ExportSpec, Output
from pipeline.runs.layout import RunLayout
from pipeline.utils.errors import UserError


def saved(tmp_path, threshold=0.37) -> RunLayout:
    layout = RunLayout(tmp_path / "run")
    layout.results.mkdir(parents=True)
    layout.detection_threshold.write_text(json.dumps({"score_threshold": threshold, "f1": 0.8, "iou": 0.5,
                                                      "split": "test", "epoch": 3}))
    return layout


def test_best_and_the_default_read_the_saved_threshold(tmp_path):
    layout = saved(tmp_path)
    assert Detections.settle_options({"score_threshold": "best"}, layout) == {"score_threshold": 0.37}
    assert Detections.settle_options({"draw": False}, layout) == {"draw": False, "score_threshold": 0.37}
    assert Detections.settle_options({"score_threshold": 0.2}, layout) == {"score_threshold": 0.2}
    assert Detections.settle_options({"score_threshold": "0.25"}, layout) == {"score_threshold": 0.25}


def test_without_a_saved_threshold_best_is_refused_and_the_default_is_the_exports(tmp_path):
    layout = RunLayout(tmp_path / "run")
    with pytest.raises(UserError, match="score_threshold=best: run .* has none .*detection_threshold.json"):
        Detections.settle_options({"score_threshold": "best"}, layout)
    with pytest.raises(UserError, match="no run folder"):
        Detections.settle_options({"score_threshold": "best"}, None)
    assert Detections.settle_options({}, layout) == {}  # Detections.of then takes the export's threshold
    for bad in ("high", 1.5, -0.1):
        with pytest.raises(UserError, match="neither a score in \\[0, 1\\] nor best"):
            Detections.settle_options({"score_threshold": bad}, layout)
    # a broken or out-of-range record is no saved threshold
    layout.results.mkdir(parents=True)
    for record in ("{not json", json.dumps({"score_threshold": 3.0}), json.dumps({"f1": 0.5})):
        layout.detection_threshold.write_text(record)
        with pytest.raises(UserError, match="has none"):
            Detections.settle_options({"score_threshold": "best"}, layout)
    # other answers take no threshold and are left alone
    assert ClassScores.settle_options({"tta": "flip"}, saved(tmp_path / "x")) == {"tta": "flip"}


def test_the_export_carries_the_saved_threshold(tmp_path):
    spec = ExportSpec(None, {}, [Output("boxes"), Output("scores", None, 0.5), Output("labels")], answer=Detections)
    Detections.settle_spec(spec, RunLayout(tmp_path / "none"))
    assert spec.outputs[1].threshold == 0.5 and "score_threshold_from" not in spec.metadata
    Detections.settle_spec(spec, saved(tmp_path))
    assert spec.outputs[1].threshold == 0.37 and spec.onnx_metadata()["score_threshold_from"]["epoch"] == 3


def test_a_service_request_may_set_its_threshold(tmp_path):
    from pipeline.delivery.serve import ExportedModel, ServeLimits, UploadError

    model = SimpleNamespace(answer=Detections, metadata={})
    service = ExportedModel(model, None, ServeLimits(), {"score_threshold": None}, saved(tmp_path))
    assert service.options == {"score_threshold": 0.37}

    def request(**query):
        return SimpleNamespace(query_params=query)

    assert service.request_options(request()) == {"score_threshold": 0.37}
    assert service.request_options(request(score_threshold="0.1")) == {"score_threshold": 0.1}
    assert service.request_options(request(score_threshold="best")) == {"score_threshold": 0.37}
    for query, needle in (({"score_threshold": "x"}, "neither a score"), ({"draw": "false"}, "'draw'")):
        with pytest.raises(UploadError, match=needle) as caught:
            service.request_options(request(**query))
        assert caught.value.status == 400
    without = ExportedModel(model, None, ServeLimits(), {}, RunLayout(tmp_path / "none"))
    with pytest.raises(UploadError, match="has none"):
        without.request_options(request(score_threshold="best"))
    with pytest.raises(UserError, match="score_threshold=best"):
        ExportedModel(model, None, ServeLimits(), {"score_threshold": "best"}, RunLayout(tmp_path / "none"))
    classifier = SimpleNamespace(answer=ClassScores, metadata={})
    with pytest.raises(UserError, match="score_threshold: not an option of this run's service"):
        ExportedModel(classifier, None, ServeLimits(), {"score_threshold": 0.3}, None)
