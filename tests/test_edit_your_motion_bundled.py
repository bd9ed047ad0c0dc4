"""Edit-Your-Motion with the bundled 64 px models on one held-out synthetic case (seed 9100): the source dancer is
fine-tuned on (150 + 150 steps), then made to perform the target's skeletons; the result is scored against the exact
target the synthetic world renders (same dancer, same room, the other motion).

Measured on 2026-12-06 (2 CPU cores; `python -m dancegen.methods.edit_your_motion.quality --count 3`; t2i-tiny on its
own autoencoder), case 0:

| 64 px, case 0 | PSNR | SSIM | pose error, px |
|---|---|---|---|
| full (target skeletons) | 25.94 | 0.809 | 3.43 |
| full, the source's own skeletons (no edit) | 25.41 | 0.782 | 5.98 |
| the source clip itself | 24.79 | 0.775 | 6.00 |
| the reference clip (another dancer and room, the target motion) | 13.26 | 0.452 | 2.93 |
| un-fine-tuned base, same inversion | 24.08 | 0.769 | 1.67 |

The edit follows the target's skeletons (3.4 px from them against 6.0 px without the edit), keeps the dancer and the
room (12 dB above another dancer in another room doing the same motion), and fine-tuning wins appearance over the
un-fine-tuned base with the same inversion (+1.9 dB here; +0.9 dB over 3 cases, each case above the base). What does
not hold at toy scale is the rest of Table IV: the base follows the skeletons better and the ablations are not worse
(see recipes/edit_your_motion/README.md), so no test asserts those.
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
    better (25.9 vs 24.1 dB, SSIM 0.81 vs 0.77 when measured)."""
    full, base = result["full"], result["base"]
    assert full["psnr"] > base["psnr"] + 1.0
    assert full["ssim"] > base["ssim"] + 0.02
