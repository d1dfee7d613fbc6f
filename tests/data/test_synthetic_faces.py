"""The shared face painter: mask states and glasses land where the generators' labels say."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from pipeline.data.synthetic.faces import Frame, paint_face, random_glasses, random_look

GREEN, MAGENTA = (0, 255, 0), (255, 0, 255)


def _paint(seed: int, mask: str | None = None, glasses_at: str | None = None):
    rng = np.random.default_rng(seed)
    look = random_look(rng, glasses=None, beard=False, mole=None)
    if glasses_at is not None:
        look = replace(look, glasses=replace(random_glasses(rng, look.eye_gap), colour=MAGENTA, thickness=0.1))
    canvas = np.zeros((200, 200, 3), np.uint8)
    frame = Frame(100, 90, 50, 50 * look.aspect)
    landmarks = paint_face(canvas, frame, look, rng, mask, GREEN, glasses_at or "eyes")
    return canvas, np.round(landmarks).astype(int), frame, look


@pytest.mark.parametrize("seed", range(8))
def test_worn_mask_hides_nose_and_mouth_incorrect_one_only_the_mouth(seed):
    def masked(mask):
        canvas, points, _, _ = _paint(seed, mask)
        mouth = points[3:].mean(0).astype(int)
        # the mask is green, its pleats and straps a darker green
        return [canvas[y, x, 0] == canvas[y, x, 2] == 0 < canvas[y, x, 1] for x, y in (points[0], points[2], mouth)]

    assert masked("worn") == [False, True, True]
    assert masked("incorrect") == [False, False, True]
    assert masked(None) == [False, False, False]


@pytest.mark.parametrize("seed", range(4))
def test_glasses_sit_on_the_eyes_or_elsewhere(seed):
    def frame_pixels_near_eyes(place):
        canvas, points, frame, look = _paint(seed, glasses_at=place)
        band = canvas[int(points[0, 1] - 0.2 * frame.ay) : int(points[0, 1] + 0.2 * frame.ay)]
        return (band == MAGENTA).all(-1).sum()

    assert frame_pixels_near_eyes("eyes") > 50
    assert frame_pixels_near_eyes("chin") == 0 and frame_pixels_near_eyes("mouth") == 0
