"""Keypoint layouts of the pose formats dancegen reads and writes.

Sources (restated in ../shared/specs/prior-art.md §3): the OpenPose output doc (COCO-18 body),
MS-COCO (17 keypoints, also AIST++), COCO-WholeBody as DWPose emits it (133), MediaPipe BlazePose (33)
and HumanML3D (the first 22 SMPL joints, 3D).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Skeleton:
    """A named keypoint layout.

    Attributes:
        name: Registry name, e.g. "coco18".
        joints: Joint names in index order.
        limbs: 0-based joint index pairs drawn or used as bones.
        dims: 2 for image keypoints, 3 for 3D joint positions.
    """

    name: str
    joints: tuple[str, ...]
    limbs: tuple[tuple[int, int], ...] = ()
    dims: int = 2

    @property
    def num_joints(self) -> int:
        return len(self.joints)

    def index(self, joint: str) -> int:
        return self.joints.index(joint)


COCO18 = Skeleton(
    "coco18",
    (
        "nose", "neck", "r_shoulder", "r_elbow", "r_wrist", "l_shoulder", "l_elbow", "l_wrist",
        "r_hip", "r_knee", "r_ankle", "l_hip", "l_knee", "l_ankle", "r_eye", "l_eye", "r_ear", "l_ear",
    ),
    # OpenPose/controlnet_aux limb order (1-based in their code); the renderer draws these 17 in this order.
    (
        (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10),
        (1, 11), (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17),
    ),
)

COCO17 = Skeleton(
    "coco17",
    (
        "nose", "l_eye", "r_eye", "l_ear", "r_ear", "l_shoulder", "r_shoulder", "l_elbow", "r_elbow",
        "l_wrist", "r_wrist", "l_hip", "r_hip", "l_knee", "r_knee", "l_ankle", "r_ankle",
    ),
    (
        (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7), (6, 8),
        (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6),
    ),
)

#: COCO-WholeBody / DWPose raw order: 0-16 body (COCO-17), 17-22 feet, 23-90 face (68), 91-111 left hand,
#: 112-132 right hand.
_FEET = ("l_big_toe", "l_small_toe", "l_heel", "r_big_toe", "r_small_toe", "r_heel")
_HAND = (
    "wrist", "thumb1", "thumb2", "thumb3", "thumb4", "index1", "index2", "index3", "index4",
    "middle1", "middle2", "middle3", "middle4", "ring1", "ring2", "ring3", "ring4",
    "pinky1", "pinky2", "pinky3", "pinky4",
)
HAND_EDGES = (
    (0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (0, 9), (9, 10),
    (10, 11), (11, 12), (0, 13), (13, 14), (14, 15), (15, 16), (0, 17), (17, 18), (18, 19), (19, 20),
)
DWPOSE133 = Skeleton(
    "dwpose133",
    COCO17.joints + _FEET + tuple(f"face{i}" for i in range(68))
    + tuple(f"l_hand_{n}" for n in _HAND) + tuple(f"r_hand_{n}" for n in _HAND),
    COCO17.limbs,
)

MEDIAPIPE33 = Skeleton(
    "mediapipe33",
    (
        "nose", "l_eye_inner", "l_eye", "l_eye_outer", "r_eye_inner", "r_eye", "r_eye_outer", "l_ear", "r_ear",
        "mouth_l", "mouth_r", "l_shoulder", "r_shoulder", "l_elbow", "r_elbow", "l_wrist", "r_wrist",
        "l_pinky", "r_pinky", "l_index", "r_index", "l_thumb", "r_thumb", "l_hip", "r_hip", "l_knee", "r_knee",
        "l_ankle", "r_ankle", "l_heel", "r_heel", "l_foot_index", "r_foot_index",
    ),
    (
        (11, 12), (11, 13), (13, 15), (12, 14), (14, 16), (11, 23), (12, 24), (23, 24), (23, 25), (25, 27),
        (24, 26), (26, 28), (27, 29), (29, 31), (28, 30), (30, 32), (0, 2), (0, 5), (2, 7), (5, 8),
    ),
)

HUMANML3D22 = Skeleton(
    "humanml3d22",
    (
        "pelvis", "l_hip", "r_hip", "spine1", "l_knee", "r_knee", "spine2", "l_ankle", "r_ankle", "spine3",
        "l_foot", "r_foot", "neck", "l_collar", "r_collar", "head", "l_shoulder", "r_shoulder", "l_elbow",
        "r_elbow", "l_wrist", "r_wrist",
    ),
    # Kinematic chain [[0,2,5,8,11],[0,1,4,7,10],[0,3,6,9,12,15],[9,14,17,19,21],[9,13,16,18,20]] as bones.
    (
        (0, 2), (2, 5), (5, 8), (8, 11), (0, 1), (1, 4), (4, 7), (7, 10), (0, 3), (3, 6), (6, 9), (9, 12),
        (12, 15), (9, 14), (14, 17), (17, 19), (19, 21), (9, 13), (13, 16), (16, 18), (18, 20),
    ),
    dims=3,
)

#: AIST++ keypoints2d/keypoints3d use the MS-COCO 17 order.
AIST = Skeleton("aist", COCO17.joints, COCO17.limbs)

SKELETONS: dict[str, Skeleton] = {s.name: s for s in (COCO18, COCO17, DWPOSE133, MEDIAPIPE33, HUMANML3D22, AIST)}


def get_skeleton(name: str) -> Skeleton:
    """Look up a skeleton by name; raises ValueError listing the known names."""
    try:
        return SKELETONS[name]
    except KeyError:
        raise ValueError(f"unknown pose format {name!r}; known: {', '.join(sorted(SKELETONS))}") from None
