"""Choreograph anyone: the new person replaces the scene's dancer, at the dancer's height and place."""

from __future__ import annotations

import numpy as np
import pytest

from dancegen.errors import InputError
from dancegen.methods.dance_any_beat.composite import place_person


def _scene():
    scene = np.zeros((96, 128, 3), np.uint8)
    scene[:] = (40, 90, 160)  # flat blue wall: inpainting must give it back
    mask = np.zeros((96, 128), bool)
    mask[30:90, 15:45] = True  # the old dancer: 60 px tall, 30 wide, bottom at y = 90, centred at x = 30
    scene[mask] = (250, 250, 0)
    return scene, mask


def _person():
    img = np.zeros((200, 100, 3), np.uint8)
    img[:] = (0, 255, 0)  # green-screen photo
    mask = np.zeros((200, 100), bool)
    mask[20:140, 30:70] = True  # 120 px tall, 40 px wide
    img[mask] = (255, 0, 0)
    return img, mask


def test_person_replaces_the_dancer_at_its_height_and_place():
    scene, smask = _scene()
    person, pmask = _person()
    out = place_person(person, pmask, scene, smask, feather=0)
    red = (out[..., 0] > 200) & (out[..., 1] < 60) & (out[..., 2] < 60)
    ys, xs = np.nonzero(red)
    assert ys.min() == 30 and ys.max() + 1 == 90  # scaled to the dancer's 60 px, feet where the dancer's were
    assert abs((xs.min() + xs.max() + 1) / 2 - 30) <= 1 and xs.max() + 1 - xs.min() == 20  # 40 px * 0.5
    yellow = (out[..., 0] > 200) & (out[..., 1] > 200) & (out[..., 2] < 60)
    assert not yellow.any()  # the old dancer is gone
    assert not (out[..., 1] > 200).any()  # and nothing of the person's green backdrop came along
    np.testing.assert_array_equal(out[:20], scene[:20])  # away from the dancer the scene is untouched
    assert np.abs(out[50, 16].astype(int) - (40, 90, 160)).max() <= 12  # inpainted wall where the dancer stood


def test_bad_masks_are_clear_errors():
    scene, smask = _scene()
    person, pmask = _person()
    with pytest.raises(InputError, match="person mask is empty"):
        place_person(person, np.zeros_like(pmask), scene, smask)
    with pytest.raises(InputError, match="scene mask is 64x64"):
        place_person(person, pmask, scene, np.ones((64, 64), bool))
