"""Dance Any Beat's held-out measures on hand-built flows (quality.flow_offset, quality.beat_speed)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dancegen.methods.dance_any_beat.model import identity_a0
from dancegen.methods.dance_any_beat.quality import beat_speed, flow_offset


def shifted(offsets: list[float], h: int = 4, w: int = 4) -> torch.Tensor:
    """a0 `(1, 3, T, h, w)`: the identity grid moved right by offsets[i] in frame i (occlusion channel unchanged)."""
    a0 = identity_a0(h, w).expand(1, 3, len(offsets), h, w).clone()
    a0[:, 0] += torch.tensor(offsets, dtype=a0.dtype).view(1, -1, 1, 1)
    return a0


def test_flow_offset_is_the_mean_distance_from_identity():
    # x moves by 0.2 in every frame, y not at all: mean over both channels = 0.1
    assert flow_offset(shifted([0.2] * 5)) == pytest.approx(0.1)
    assert flow_offset(shifted([0.0] * 5)) == 0.0


def test_beat_speed_sees_a_dancer_resting_on_the_beats():
    """Smoothstep moves between key poses on beats every 4 frames come to rest there: the speed on the frames up to a
    beat is far below the mean; the same path at constant speed scores 1; the same rests scored against beats half a
    period away score above 1; no beat in range is nan."""
    period, n = 4, 24
    frames = np.arange(1, n + 1)
    phase = frames / period
    ease = np.floor(phase) + (3 * np.mod(phase, 1) ** 2 - 2 * np.mod(phase, 1) ** 3)  # keys at multiples of 4
    on_beat = shifted(list(0.05 * ease))
    beats = np.arange(0, n + 1, period) + 1  # librosa's beats come a frame late at 10 fps: the rest is at beat - 1
    # per frame the path advances 0.156, 0.344, 0.344, 0.156 of a move (smoothstep at quarter steps): the two frames
    # up to each beat average 0.156 against a mean of 0.25
    assert beat_speed(on_beat, beats) == pytest.approx(0.15625 / 0.25)
    assert beat_speed(shifted(list(0.05 * phase)), beats) == pytest.approx(1.0)
    assert beat_speed(on_beat, beats + period // 2) == pytest.approx(0.34375 / 0.25)
    assert math.isnan(beat_speed(on_beat, np.array([100])))
