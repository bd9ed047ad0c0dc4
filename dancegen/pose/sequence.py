"""PoseSequence: the pose data contract shared by every verb (see DESIGN.md, "Data contracts")."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from dancegen.pose.skeletons import Skeleton, get_skeleton


@dataclass
class PoseSequence:
    """One person's 2D keypoints over time.

    Attributes:
        keypoints: `(F, J, 3)` float32 array of (x, y, confidence); x and y in pixels of a `width` x `height`
            image, confidence in [0, 1]. A missing joint has confidence 0 (OpenPose writes it as 0, 0, 0).
        format: Skeleton name of the body keypoints (see `dancegen.pose.skeletons.SKELETONS`).
        width: Image width in pixels.
        height: Image height in pixels.
        fps: Frames per second of the sequence.
        hands: Optional `(F, 2, 21, 3)` left and right hand keypoints, same conventions.
        face: Optional `(F, K, 3)` face keypoints (68 from DWPose, 70 from OpenPose).
        meta: Free-form provenance (backend, source file, ...). Written next to outputs, never interpreted.
    """

    keypoints: np.ndarray
    format: str = "coco18"
    width: int = 512
    height: int = 512
    fps: float = 30.0
    hands: np.ndarray | None = None
    face: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        self.keypoints = np.asarray(self.keypoints, dtype=np.float32)
        skel = get_skeleton(self.format)
        if self.keypoints.ndim != 3 or self.keypoints.shape[1:] != (skel.num_joints, 3):
            raise ValueError(
                f"{self.format} keypoints must have shape (F, {skel.num_joints}, 3), got {self.keypoints.shape}"
            )
        if not np.isfinite(self.keypoints).all():
            raise ValueError("keypoints contain NaN or inf")
        if self.width <= 0 or self.height <= 0 or self.fps <= 0:
            raise ValueError(f"width, height and fps must be positive, got {self.width}x{self.height} @ {self.fps}")
        f = self.num_frames
        if self.hands is not None:
            self.hands = np.asarray(self.hands, dtype=np.float32)
            if self.hands.shape != (f, 2, 21, 3):
                raise ValueError(f"hands must have shape ({f}, 2, 21, 3), got {self.hands.shape}")
        if self.face is not None:
            self.face = np.asarray(self.face, dtype=np.float32)
            if self.face.ndim != 3 or self.face.shape[0] != f or self.face.shape[2] != 3:
                raise ValueError(f"face must have shape ({f}, K, 3), got {self.face.shape}")

    @property
    def skeleton(self) -> Skeleton:
        return get_skeleton(self.format)

    @property
    def num_frames(self) -> int:
        return int(self.keypoints.shape[0])

    def __len__(self) -> int:
        return self.num_frames

    @property
    def xy(self) -> np.ndarray:
        """`(F, J, 2)` pixel coordinates."""
        return self.keypoints[..., :2]

    @property
    def conf(self) -> np.ndarray:
        """`(F, J)` confidences."""
        return self.keypoints[..., 2]

    def visible(self, threshold: float = 0.3) -> np.ndarray:
        """`(F, J)` bool mask of joints with confidence above `threshold`."""
        return self.conf > threshold

    def replace(self, **changes) -> PoseSequence:
        """A copy with some fields replaced (arrays are copied, so edits never alias)."""
        new = replace(self, **changes)
        new.keypoints = new.keypoints.copy()
        new.hands = None if new.hands is None else new.hands.copy()
        new.face = None if new.face is None else new.face.copy()
        new.meta = dict(new.meta)
        return new

    def __getitem__(self, idx) -> PoseSequence:
        """Frame slicing: `seq[2:10]`, `seq[[0, 4, 8]]`. Always returns a PoseSequence."""
        if isinstance(idx, int):
            idx = slice(idx, idx + 1 if idx != -1 else None)
        return self.replace(
            keypoints=self.keypoints[idx],
            hands=None if self.hands is None else self.hands[idx],
            face=None if self.face is None else self.face[idx],
        )

    def resized(self, width: int, height: int) -> PoseSequence:
        """Scale coordinates to a new image size (confidences unchanged)."""
        sx, sy = width / self.width, height / self.height

        def scale(a):
            if a is None:
                return None
            a = a.copy()
            a[..., 0] *= sx
            a[..., 1] *= sy
            return a

        return self.replace(keypoints=scale(self.keypoints), hands=scale(self.hands), face=scale(self.face),
                            width=int(width), height=int(height))
