"""LatentMan with the bundled 64 px models on 4 held-out synthetic motions (seed 7), 12 DDIM steps.

Measured on 2026-12-05 (2 CPU cores; `python -m dancegen.methods.latentman.quality --count 4 --steps 12`):
H_MSE per-frame 315.3, cross-frame attention 302.8, LatentMan (cross-frame + SLA + PWG) 286.9 (-9 % / -5 %);
per case 90/832/40/299, 89/806/39/277, 90/657/38/363: the gain comes mostly from one case and one case gets worse,
so the margins below are modest. SynthPose joints of LatentMan's frames vs the rendered skeleton: 5.15 px, vs another
case's skeleton 6.77 px. The generated clothes colours match the prompt in 38 % of garments for every variant (the
bundled text-to-image model follows colour words weakly, issue 14), and the next case's prompt colours in 0 %.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.quality

MEASURED = {"per-frame": 315.3, "cross-frame": 302.8, "latentman": 286.9, "pose": 5.15, "pose_other": 6.77}


@pytest.fixture(scope="module")
def report():
    from dancegen.methods.latentman.quality import VARIANTS, evaluate

    return evaluate(4, steps=12, variants={k: VARIANTS[k] for k in ("per-frame", "cross-frame", "latentman")})


def test_latentman_lowers_h_mse_below_the_per_frame_and_cross_frame_baselines(report):
    s = report["summary"]
    assert s["latentman"]["h_mse"] < 0.96 * s["per-frame"]["h_mse"]
    assert s["latentman"]["h_mse"] < 0.99 * s["cross-frame"]["h_mse"]
    assert s["cross-frame"]["h_mse"] < s["per-frame"]["h_mse"]


def test_the_character_follows_the_rendered_motion_more_than_another_motion(report):
    s = report["summary"]["latentman"]
    assert s["pose"] < s["pose_other"] - 1.0


def test_the_clothes_take_the_prompts_colours_more_than_another_prompts(report):
    s = report["summary"]["latentman"]
    assert s["colour"] >= s["colour_other"] + 0.25
