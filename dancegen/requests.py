"""What a generating verb asks of a method: one request dataclass per verb, shared options in one base.

The CLI and `dancegen.api` build a request; `dancegen.registry.choose_method` picks the method (``--method``, else
the method recorded in the ``--model`` folder, else the verb's default); the method's verb function takes the
request (``fn(request, progress=None) -> report``). Options every generating verb has (model reference, recipe,
steps, guidance, seed, precision and memory switches, LoRA files, downloads) live in `GenerateRequest`, so each verb
spells them the same way. `given` records which fields the user set, so a method can refuse an option it does not
use instead of silently ignoring it. No torch import.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dancegen.errors import InputError
from dancegen.runtime import downloads_allowed


@dataclass
class GenerateRequest:
    """Options shared by every generating verb.

    Attributes:
        out: the output video (or frame folder).
        model: a bundled model name, a local folder (base weights in the diffusers layout, or a `train` /
            `finetune-oneshot` run folder that records its method), a single-file SD-1.5 checkpoint (.safetensors),
            or a Hugging Face id (looked up in the local cache; downloaded only with `allow_download`).
        method: registry id; None: recorded in `model`, else the verb's default.
        recipe / overrides: recipe YAML and ``key=value`` overrides.
        steps / guidance_scale / seed / frames: sampling steps, classifier-free guidance, seed, frame limit
            (None: the recipe's).
        size: output ``(width, height)`` (None: the model's).
        device: "auto" | "cpu" | "cuda" | "cuda:N" | "mps".
        dtype: "auto" (fp32 on CPU, bf16/fp16 on CUDA) | "fp32" | "fp16" | "bf16".
        cpu_offload: move each network to the GPU only while it runs (CUDA only).
        vae_slicing / vae_tiling: decode one frame / one tile at a time (None: on for GPUs).
        lora: LoRA files (diffusers or kohya format), each ``PATH`` or ``PATH:WEIGHT``.
        allow_download: fetch a hub model missing from the local cache (also $DANCEGEN_ALLOW_DOWNLOAD=1).
        preview / dry_run: also write a side-by-side preview; build and report without generating.
        given: the fields the user set (the rest are defaults).
    """

    out: Path | None = None
    model: str | None = None
    method: str | None = None
    recipe: Path | None = None
    overrides: list[str] = field(default_factory=list)
    steps: int | None = None
    guidance_scale: float | None = None
    seed: int | None = None
    frames: int | None = None
    size: tuple[int, int] | None = None
    device: str = "auto"
    dtype: str = "auto"
    cpu_offload: bool = False
    vae_slicing: bool | None = None
    vae_tiling: bool = False
    lora: list[str] = field(default_factory=list)
    allow_download: bool = False
    preview: bool = True
    dry_run: bool = False
    given: frozenset[str] = frozenset()

    @classmethod
    def build(cls, **kwargs: Any):
        """The request of these keyword arguments; `given` = those that differ from the defaults.

        Raises:
            InputError: an unknown option, or a bad value of a shared one.
        """
        names = {f.name for f in dataclasses.fields(cls)} - {"given"}
        unknown = sorted(set(kwargs) - names)
        if unknown:
            raise InputError(f"{cls.verb()} has no option {', '.join(unknown)}")
        defaults = cls()
        given = frozenset(k for k, v in kwargs.items() if v != getattr(defaults, k))
        kw = {k: v for k, v in kwargs.items() if v is not None or k in given}
        if kw.get("overrides") is None:
            kw.pop("overrides", None)
        if kw.get("lora") is None:
            kw.pop("lora", None)
        req = cls(**kw, given=given)
        req.check()
        return req

    @classmethod
    def verb(cls) -> str:
        return next((v for v, c in VERB_REQUESTS.items() if c is cls), cls.__name__)

    def check(self) -> None:
        """Validate the shared options (paths and numbers) before any model is loaded."""
        from dancegen.runtime import DEVICES

        if self.steps is not None and self.steps < 1:
            raise InputError(f"--steps must be >= 1, got {self.steps}")
        if self.frames is not None and self.frames < 1:
            raise InputError(f"--frames must be >= 1, got {self.frames}")
        if self.guidance_scale is not None and not self.guidance_scale >= 0:
            raise InputError(f"--guidance must be >= 0, got {self.guidance_scale}")
        if self.dtype not in ("auto", "fp32", "fp16", "bf16"):
            raise InputError(f"--dtype must be auto, fp32, fp16 or bf16, got {self.dtype!r}")
        if self.device not in DEVICES and not str(self.device).startswith("cuda:"):
            raise InputError(f"--device must be one of {', '.join(DEVICES)} or cuda:N, got {self.device!r}")
        if self.size is not None and (len(self.size) != 2 or min(self.size) < 8):
            raise InputError(f"--size must be N or WxH with sides >= 8, got {self.size}")
        if self.recipe is not None and not Path(self.recipe).is_file():
            raise InputError("recipe not found", self.recipe)
        self.lora_files()

    def lora_files(self) -> list[tuple[Path, float]]:
        """``[(file, weight)]`` of `lora` (``PATH`` or ``PATH:WEIGHT``), each file checked to exist."""
        out = []
        for item in self.lora:
            path, weight = str(item), 1.0
            head, sep, tail = path.rpartition(":")
            if sep and head and not Path(path).exists():
                try:
                    path, weight = head, float(tail)
                except ValueError:
                    pass
            if not Path(path).is_file():
                raise InputError("LoRA file not found (give PATH or PATH:WEIGHT)", path)
            out.append((Path(path), weight))
        return out

    def downloads_allowed(self) -> bool:
        """`allow_download`, or $DANCEGEN_ALLOW_DOWNLOAD set to a true value."""
        return downloads_allowed(self.allow_download)

    def runtime(self, recipe_device: str = "auto", recipe_dtype: str = "auto"):
        """The device / precision / memory plan (`core.weights.plan_runtime`); the request wins over the recipe."""
        from dancegen.core.weights import plan_runtime

        return plan_runtime(self.device if self.device != "auto" else recipe_device,
                            self.dtype if self.dtype != "auto" else recipe_dtype, cpu_offload=self.cpu_offload,
                            vae_slicing=self.vae_slicing)


@dataclass
class AnimateRequest(GenerateRequest):
    """`animate`: a person (photo, or the source of a fine-tuned case) performs the driving poses.

    Attributes:
        ref: reference photo (not needed by methods whose model folder holds its source, e.g. edit-your-motion).
        poses: driving poses: OpenPose JSON folder, .npz/.json, a video / frame folder, or a PoseSequence.
        background: background image for the background control (default: the reference minus the person).
        ref_mask: person mask of the reference: a path, "auto" (pose backend) or None.
        retarget: put the driving motion on the reference body first.
    """

    ref: Any = None
    poses: Any = None
    background: Path | None = None
    ref_mask: Any = "auto"
    retarget: bool = True

    def check(self) -> None:
        super().check()
        if self.dry_run:  # a dry run builds the model only
            return
        _exists(self.ref, "reference image", image=True)
        _exists(self.poses, "driving poses")
        _exists(self.background, "background image", image=True)
        if self.out is not None:
            from dancegen.io.outputs import check_video_output

            check_video_output(self.out)
        if self.ref_mask not in (None, "auto"):
            _exists(self.ref_mask, "reference mask", image=True)


@dataclass
class Music2DanceRequest(GenerateRequest):
    """`music2dance`: the person in `ref` dances to `song`; the video carries the music.

    Attributes:
        song: music file; ref: photo; seconds / start: the part of the song; fps: output frame rate; sampler: ddim
        or ddpm; scene / ref_mask / scene_mask: "choreograph anyone" composite.
    """

    song: Path | None = None
    ref: Path | None = None
    seconds: float | None = None
    start: float = 0.0
    fps: float | None = None
    sampler: str | None = None
    scene: Path | None = None
    ref_mask: str = "auto"
    scene_mask: str = "auto"

    def check(self) -> None:
        super().check()
        if self.song is None or self.ref is None:
            raise InputError("music2dance needs a song and --ref")
        _exists(self.song, "song", file=True)
        _exists(self.ref, "reference image", image=True)
        _exists(self.scene, "scene image", image=True)
        positive_number("--fps", self.fps)  # 0 used to mean "the model's rate" silently
        positive_number("--seconds", self.seconds)
        positive_number("--start", self.start, allow_zero=True)
        if self.out is not None and Path(self.out).suffix.lower() not in (".mp4", ".mov"):
            raise InputError("music2dance writes an mp4 (the music is its audio track); give -o NAME.mp4", self.out)


@dataclass
class Text2CharacterRequest(GenerateRequest):
    """`text2character`: a character described in words performs a motion (from text or from poses).

    Attributes:
        prompt / negative_prompt: the character (or one prompt for character and motion).
        motion: the motion in words, or a motion file (MDM results.npy, HumanML3D .npy, AIST++ .pkl, BVH).
        poses: driving poses instead of a motion (Dancing Avatar).
        clothes / face / place: Dancing Avatar's prompt parts; background: a background image.
        character: a Dancing Avatar character pack folder (refined words + clothes / face LoRAs) to reuse.
        controlnet: ControlNet references (folders or hub ids).
        fps: the output frame rate (None: the method's).
    """

    prompt: str | None = None
    negative_prompt: str | None = None
    motion: str | None = None
    poses: Any = None
    clothes: str | None = None
    face: str | None = None
    place: str | None = None
    background: Path | None = None
    character: Path | None = None
    controlnet: list[str] = field(default_factory=list)
    fps: float | None = None

    def check(self) -> None:
        super().check()
        positive_number("--fps", self.fps)
        _exists(self.character, "character pack")
        if self.poses is None and not (self.prompt or self.clothes or self.face):
            raise InputError('text2character needs a prompt, e.g. dancegen text2character "a dancer in a red t-shirt" '
                             '--motion "a person jumps" -o out.mp4')
        _exists(self.poses, "driving poses")
        _exists(self.background, "background image", image=True)
        if self.out is not None and Path(self.out).suffix.lower() not in (".mp4", ".mov", ".gif"):
            raise InputError("text2character writes a video: give -o NAME.mp4 (.mov, .gif)", self.out)


def positive_number(option: str, value: float | None, allow_zero: bool = False) -> None:
    """A numeric option, when given, must be finite and > 0 (>= 0 with `allow_zero`): never a silent default."""
    import math

    if value is None:
        return
    ok = math.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        raise InputError(f"{option} must be a {'non-negative' if allow_zero else 'positive'} number, got {value}")


def _exists(path, what: str, file: bool = False, image: bool = False) -> None:
    """A path-like option must exist, and be a file when `file`, and an image whose header reads when `image`
    (arrays and pose sequences pass through)."""
    if isinstance(path, (str, os.PathLike)):
        if not Path(path).exists():
            raise InputError(f"{what} not found", path)
        if (file or image) and Path(path).is_dir():
            raise InputError(f"{what}: is a folder, expected a file", path)
        if image:
            from dancegen.io.video import check_image

            check_image(path)


VERB_REQUESTS: dict[str, type[GenerateRequest]] = {
    "animate": AnimateRequest,
    "music2dance": Music2DanceRequest,
    "text2character": Text2CharacterRequest,
}
SHARED_FIELDS = tuple(f.name for f in dataclasses.fields(GenerateRequest) if f.name != "given")
