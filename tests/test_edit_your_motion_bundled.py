"""Edit-Your-Motion with the bundled 64 px models on one held-out synthetic case (seed 9100): the source dancer is
fine-tuned on (150 + 150 steps), then made to perform the target's skeletons; the result is scored against the exact
target the synthetic world renders (same dancer, same room, the other motion).

Measured on 2026-12-06 (2 CPU cores; `python -m dancegen.methods.edit_your_motion.quality --count 3`; fine-tune on
t < 200, edit at ControlNet scale 2, the bundled recipe), case 0:

| 64 px, case 0 | PSNR | SSIM | pose error, px | warping error |
|---|---|---|---|---|
| full (target skeletons) | 26.72 | 0.818 | 1.16 | 0.7e-3 |
| full, the source's own skeletons (no edit) | 25.28 | 0.780 | 5.99 | |
| the source clip itself | 24.79 | 0.775 | 6.00 | |
| the reference clip (another dancer and room, the target motion) | 13.26 | 0.452 | 2.93 | |
| un-fine-tuned base, same inversion | 23.07 | 0.737 | 1.50 | 2.6e-3 |

The edit follows the target's skeletons (1.2 px from them against 6.0 px without the edit), keeps the dancer and the
room (13 dB above another dancer in another room doing the same motion), and fine-tuning beats the un-fine-tuned base
with the same inversion on appearance and steadiness (over 3 cases x 3 run seeds: +1.8 dB and half the warping error,
in every run), while the base stays a little closer to the skeletons (1.20 vs 1.48 px). The ablations are not all
worse at toy scale (w/o RCA only flickers more, by about 10 %, and w/o STL is better; see
recipes/edit_your_motion/README.md): their gaps on one case are too close to the seed spread to assert.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.quality


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    from dancegen.methods.edit_your_motion.quality import make_case, run_case

    case = make_case(tmp_path_factory.mktemp("eym") / "case_000", 0)
    return run_case(case, variants=("full", "base"))


def test_the_edit_follows_the_target_skeletons(result):
    full, no_edit = result["full"], result["source_poses"]
    assert full["pose_px"] < 0.8 * no_edit["pose_px"]  # 3.4 vs 6.0 px when measured
    assert full["pose_px"] < 0.8 * result["source_copy"]["pose_px"]


def test_the_edit_keeps_the_dancer_and_the_room(result):
    full, other = result["full"], result["reference_copy"]
    assert full["psnr"] > other["psnr"] + 8.0  # 25.9 vs 13.3 dB when measured
    assert full["ssim"] > other["ssim"] + 0.2  # 0.81 vs 0.45


def test_fine_tuning_wins_appearance_over_the_base_with_the_same_inversion(result):
    """Table IV's first row against the un-fine-tuned base: fine-tuning on the source keeps the dancer and the room
    better (26.7 vs 23.1 dB, SSIM 0.82 vs 0.74 when measured)."""
    full, base = result["full"], result["base"]
    assert full["psnr"] > base["psnr"] + 1.0
    assert full["ssim"] > base["ssim"] + 0.02


def test_fine_tuning_steadies_the_video_and_keeps_the_base_pose_following(result):
    """The fine-tuned edit flickers less than the base's (warping error 0.7e-3 vs 2.6e-3 when measured) and, with
    the fine-tune kept to t < 200 and ControlNet scale 2, stays within half a pixel of the base on the skeletons
    (1.16 vs 1.50 px on this case; over 6 held-out cases the base is about 0.5 px closer, 1.20 vs 1.71). The
    uncapped recipe at scale 1 was 3.43 vs 1.67 px here, which this test would fail."""
    full, base = result["full"], result["base"]
    assert full["warp"] < 0.6 * base["warp"]
    assert full["pose_px"] < base["pose_px"] + 0.5
