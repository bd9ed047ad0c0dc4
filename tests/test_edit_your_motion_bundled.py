"""Edit-Your-Motion with the bundled 64 px models on one held-out synthetic case (seed 9100): the source dancer is
fine-tuned on (150 + 150 steps), then made to perform the target's skeletons; the result is scored against the exact
target the synthetic world renders (same dancer, same room, the other motion).

Measured on 2026-12-05 (2 CPU cores; `python -m dancegen.methods.edit_your_motion.quality --count 3`), case 0:

| 64 px, case 0 | PSNR | SSIM | pose error, px |
|---|---|---|---|
| full (target skeletons) | 21.43 | 0.648 | 3.94 |
| full, the source's own skeletons (no edit) | 21.26 | 0.632 | 6.02 |
| the source clip itself | 24.79 | 0.775 | 6.00 |
| the reference clip (another dancer and room, the target motion) | 13.26 | 0.452 | 2.93 |
| un-fine-tuned base, same inversion | 22.12 | 0.667 | 2.96 |

The edit follows the target's skeletons (3.9 px from them against 6.0 px without the edit) and keeps the dancer and
the room (8 dB above another dancer in another room doing the same motion). What does not hold at toy scale is
Table IV's main claim: the un-fine-tuned base with the same DDIM inversion scores as well or better (see
recipes/edit_your_motion/README.md), so no test asserts it.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.quality


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    from dancegen.methods.edit_your_motion.quality import make_case, run_case

    case = make_case(tmp_path_factory.mktemp("eym") / "case_000", 0)
    return run_case(case, variants=("full",))


def test_the_edit_follows_the_target_skeletons(result):
    full, no_edit = result["full"], result["source_poses"]
    assert full["pose_px"] < 0.8 * no_edit["pose_px"]  # 3.9 vs 6.0 px when measured
    assert full["pose_px"] < 0.8 * result["source_copy"]["pose_px"]


def test_the_edit_keeps_the_dancer_and_the_room(result):
    full, other = result["full"], result["reference_copy"]
    assert full["psnr"] > other["psnr"] + 5.0  # 21.4 vs 13.3 dB when measured
    assert full["ssim"] > other["ssim"] + 0.1  # 0.65 vs 0.45
