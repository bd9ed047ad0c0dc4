"""The `dancegen` command line (Typer). Thin by design: parse, call `dancegen.api`, print.

Heavy libraries (torch, diffusers, librosa) are imported inside api functions, so `dancegen --help` is fast.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated

import typer

from dancegen import __version__
from dancegen.errors import DanceGenError, InputError


def _flags_without_type_column() -> None:
    """On/off flags take no value, so their help row shows no type: typer (0.2x) prints `<bool>` for them, which
    reads as if `--quiet <bool>` wanted one, and `<list[str]>` for a repeatable option, which takes one `<str>` each
    time (issue #15). Applied once, to typer's option class; a typer without the hook is left as it is."""
    from typer.core import TyperOption

    shown = getattr(TyperOption, "display_type_rich", None)
    if shown is None or getattr(shown, "dancegen_flags_hidden", False):
        return

    def display_type_rich(self, ctx):
        if getattr(self, "is_flag", False):
            return None
        label = shown(self, ctx)
        if isinstance(label, str) and label.startswith("<list[") and label.endswith("]>"):
            return "<" + label[len("<list["):-len("]>")] + ">"
        return label

    display_type_rich.dancegen_flags_hidden = True
    TyperOption.display_type_rich = display_type_rich


_flags_without_type_column()

app = typer.Typer(
    name="dancegen",
    help="Human dance video generation: animate a photo from poses, dance to music, edit a video's motion, and make "
    "a character described in words dance (from a motion text or from poses).\n\n"
    "Shared tools: synth, extract-pose, pose, flow, evaluate, weights. Run `dancegen VERB --help` for an example of "
    "each.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


class State:
    device: str = "auto"
    seed: int = 0
    json: bool = False


state = State()


def _err(msg: str) -> None:
    from rich.console import Console

    Console(stderr=True, highlight=False).print(f"[bold red]error:[/bold red] {msg}", markup=True, soft_wrap=True)


OUTPUT_PARAMS = ("out", "video")
"""Parameters of a verb that name something it writes: checked before the verb runs (`_check_outputs`)."""


def _check_outputs(kw: dict) -> None:
    """Every verb's outputs can be written at all (no file among their parents, no read-only folder), before any
    input is read or model loaded."""
    from dancegen.io.outputs import check_output_location

    for name in OUTPUT_PARAMS:
        if isinstance(kw.get(name), Path):
            check_output_location(kw[name])


def verb(name: str, _group: typer.Typer | None = None, **kwargs):
    """Register a command; a `DanceGenError` becomes one red line on stderr and exit code 2."""

    def deco(fn):
        @functools.wraps(fn)
        def wrapper(*a, **kw):
            from dancegen.console import quiet_libraries, verbosity
            from dancegen.runtime import downloads_allowed, hub_offline_mode

            try:
                _check_outputs(kw)
                # other libraries' warnings and notices only with --verbose; --quiet silences their bars too;
                # no request to the Hugging Face Hub unless the user allowed downloads
                with quiet_libraries(active=verbosity() <= 1, bars=verbosity() == 0), \
                        hub_offline_mode(not downloads_allowed(kw.get("allow_download"))):
                    return fn(*a, **kw)
            except DanceGenError as e:
                _err(str(e))
                raise typer.Exit(e.exit_code) from None
            except KeyboardInterrupt:
                _err("interrupted; finished outputs are kept, rerun to resume")
                raise typer.Exit(130) from None

        return (_group or app).command(name, **kwargs)(wrapper)

    return deco


def _version(value: bool):
    if value:
        typer.echo(f"dancegen {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N | mps.")] = "auto",
    seed: Annotated[int, typer.Option(help="Seed for every random choice (written to output metadata).")] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only errors.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="More detail, progress bars even when piped.")] = False,
    json_: Annotated[bool, typer.Option("--json", help="Print each verb's whole result as one JSON object on "
                                                      "stdout (also with --quiet), for scripts.")] = False,
    version: Annotated[bool | None, typer.Option("--version", callback=_version, is_eager=True,
                                                    help="Print the version and exit.")] = None,
):
    """Global options go before the verb: `dancegen --device cpu --seed 3 synth -o out/`."""
    from dancegen.console import set_verbosity
    from dancegen.runtime import DEVICES

    if device not in DEVICES and not (device.startswith("cuda:") and device[5:].isdigit()):
        _err(f"--device must be one of {', '.join(DEVICES)} or cuda:N, got {device!r}")
        raise typer.Exit(2)
    if not 0 <= seed < 2**32:
        _err(f"--seed must be between 0 and {2**32 - 1} (numpy and torch generators take unsigned 32-bit seeds), "
             f"got {seed}")
        raise typer.Exit(2)
    state.device, state.seed, state.json = device, seed, json_
    set_verbosity(0 if quiet else 2 if verbose else 1)


# ---- verbs ------------------------------------------------------------------------------------------------------
# Each verb: a docstring with an example (shown by --help), options, one call into dancegen.api.


def _report(report: dict, keys: tuple[str, ...] = (), json_only: bool = False) -> None:
    """Print the interesting part of an api report (everything with --verbose) as ``key: value`` lines on stdout,
    where a script reads the results; progress and messages stay on stderr. --quiet prints nothing. With --json the
    whole report is one JSON object on stdout (paths as strings), whatever the verbosity. `json_only`: verbs that
    show their results as a table on stderr print to stdout only with --json."""
    from dancegen.console import verbosity

    if state.json:
        import json

        typer.echo(json.dumps(_plain(report), default=str, allow_nan=False))
        return
    if verbosity() < 1 or json_only:
        return
    shown = report if verbosity() >= 2 or not keys else {k: report[k] for k in keys if k in report}
    for k, v in shown.items():
        typer.echo(f"{k}: {v}")


def _plain(x):
    """A report as standard JSON values: NaN / inf become null (Python would write non-standard NaN tokens), numpy
    scalars and arrays become numbers and lists; anything else unknown is written as its string."""
    import math

    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if hasattr(x, "tolist") and not isinstance(x, (str, bytes)):  # numpy scalars / arrays
        return _plain(x.tolist())
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _sets(items: list[str] | None) -> dict:
    """`--set k=v` pairs as a dict with YAML-typed values."""
    import yaml

    out = {}
    for it in items or []:
        if "=" not in it:
            raise DanceGenError(f"--set expects key=value, got {it!r}")
        k, v = it.split("=", 1)
        out[k.strip()] = yaml.safe_load(v)
    return out


def _at_least_one(option: str, value: int | None) -> None:
    """An optional count must be >= 1 when given (0 and negatives never silently mean 'not given')."""
    if value is not None and value < 1:
        raise InputError(f"{option} must be >= 1, got {value}")


SIZE_RANGE = (16, 4096)
"""What `--size` / `--image-size` accept (the synthetic world renders 16 to 4096 px)."""


def _parse_size(text: str | None):
    """`--size N` -> N, `--size WxH` -> (W, H), None -> None."""
    if not text:
        return None
    try:
        if "x" in text.lower():
            w, h = (int(v) for v in text.lower().split("x"))
            value = (w, h)
        else:
            value = w = h = int(text)
    except ValueError:
        raise DanceGenError(f"--size must be N or WxH (e.g. 512 or 512x768), got {text!r}") from None
    if not (SIZE_RANGE[0] <= w <= SIZE_RANGE[1] and SIZE_RANGE[0] <= h <= SIZE_RANGE[1]):
        raise DanceGenError(f"--size must be within {SIZE_RANGE[0]} to {SIZE_RANGE[1]} px, got {text!r}")
    return value


def _image_size(text: str | None) -> tuple[int, int] | None:
    """`--image-size WxH` -> (W, H)."""
    v = _parse_size(text)
    if v is not None and not isinstance(v, tuple):
        raise DanceGenError(f"--image-size must be WxH (e.g. 512x768), got {text!r}")
    return v


ImageSize = Annotated[str | None, typer.Option("--image-size", help="WxH of the images behind OpenPose JSON that "
                                                "records no size (files from OpenPose or controlnet_aux).")]


pose_app = typer.Typer(help="Pose files: convert formats, render ControlNet pose maps, smooth jitter, retarget.",
                       no_args_is_help=True, rich_markup_mode="rich")
app.add_typer(pose_app, name="pose")


def pose_verb(name: str, **kwargs):
    """Register a `dancegen pose NAME` subcommand with the same error handling as top-level verbs."""

    def deco(fn):
        return verb(name, _group=pose_app, **kwargs)(fn)

    return deco


Src = Annotated[Path, typer.Argument(help="Pose folder (OpenPose JSON), .json frame or .npz; a 3D motion file (.npy, "
                                     ".pkl, .bvh; projected to COCO-18); or a video/image.")]
Out = Annotated[Path, typer.Option("--output", "-o", help="Output folder (OpenPose JSON + pose.mp4) or .npz.")]


@pose_verb("convert")
def pose_convert_cmd(src: Src, out: Out, to: Annotated[str, typer.Option(
        help="Target format: coco18 (OpenPose), coco17 (MS-COCO), aist (AIST++, COCO-17 order), dwpose133 "
             "(COCO-WholeBody), mediapipe33 (BlazePose).")] = "coco18",
                     fps: Annotated[float | None, typer.Option(help="Override the frame rate.")] = None,
                     image_size: ImageSize = None):
    """Convert poses between coco18, coco17, aist, dwpose133 and mediapipe33, or project a 3D motion to 2D.

    SRC may also be a 3D motion file: MDM results.npy, HumanML3D new_joints/*.npy, dancegen synth joints3d.npy,
    AIST++ keypoints3d/*.pkl or .bvh. It is projected to COCO-18 through one fixed front camera framed on the whole
    motion (image size from --image-size, default 512x512; --fps overrides the file's frame rate).

    Example: [cyan]dancegen pose convert poses/ --to coco17 -o poses_coco17.npz[/cyan]

    Example: [cyan]dancegen pose convert results.npy -o mdm_poses/ --image-size 512x512[/cyan]
    """
    from dancegen import api

    _report(api.pose_convert(src, out, to=to, fps=fps, size=_image_size(image_size)), ("frames", "format", "poses"))


@pose_verb("render")
def pose_render_cmd(src: Src,
                    out: Annotated[Path, typer.Option("--output", "-o", help=".mp4, .gif or a folder for PNGs.")],
                    width: int | None = None, height: int | None = None,
                    hands: Annotated[bool, typer.Option(help="Draw hands when present.")] = True,
                    face: Annotated[bool, typer.Option(help="Draw face points when present.")] = True,
                    threshold: Annotated[float, typer.Option(help="Confidence below which joints are skipped.")] = 0.3):
    """Draw ControlNet pose maps in the OpenPose/controlnet_aux convention (same colours, widths, order).

    SRC may also be a 3D motion file (MDM results.npy, HumanML3D new_joints/*.npy, synth joints3d.npy, AIST++
    keypoints3d/*.pkl, .bvh): it is projected to COCO-18 through one fixed front camera at --width x --height
    (default 512x512) and then drawn.

    Example: [cyan]dancegen pose render poses/ -o pose_maps.mp4 --width 512 --height 512[/cyan]
    """
    from dancegen import api

    _report(api.pose_render(src, out, width, height, hands, face, threshold), ("frames", "output"))


@pose_verb("smooth")
def pose_smooth_cmd(src: Src, out: Out,
                    method: Annotated[str, typer.Option(help="one_euro | savgol | gaussian.")] = "one_euro",
                    max_gap: Annotated[int, typer.Option(help="Interpolate gaps up to this many frames.")] = 5,
                    set_: Annotated[list[str] | None, typer.Option("--set", help="Method parameter k=v.")] = None,
                    image_size: ImageSize = None):
    """Reduce temporal jitter of extracted poses; missing joints stay missing beyond --max-gap.

    Example: [cyan]dancegen pose smooth poses/ -o smooth/ --method one_euro --set beta=0.05[/cyan]
    """
    from dancegen import api

    _report(api.pose_smooth(src, out, method, max_gap, size=_image_size(image_size), **_sets(set_)),
            ("frames", "jitter_before", "jitter_after"))


@pose_verb("retarget")
def pose_retarget_cmd(
    driving: Annotated[Path, typer.Argument(help="Driving poses (folder/npz) or a driving video.")],
    ref: Annotated[Path, typer.Option("--ref", help="Reference image (its pose is extracted) or reference pose.")],
    out: Out,
    mode: Annotated[str, typer.Option(help="bones: reference bone lengths + position; "
                                           "offset: Edit-Your-Motion centre/scale alignment.")] = "bones",
    root: Annotated[str, typer.Option(help="Root joint for --mode bones: neck | mid_hip.")] = "neck",
    image_size: ImageSize = None,
):
    """Put the driving motion on the body of the person in the reference image.

    Bone directions come from the driving poses; bone lengths and position from the reference, so a tall dancer's
    motion fits a short person's photo (the feature users of every animation tool ask for).

    Example: [cyan]dancegen pose retarget driving/poses --ref photo.png -o retargeted/[/cyan]
    """
    from dancegen import api

    _report(api.pose_retarget(driving, ref, out, mode=mode, root=root, size=_image_size(image_size)),
            ("frames", "mode", "poses", "pose_video"))


Shard = Annotated[str | None, typer.Option("--shard", help="K/N: do the K-th of N parts of a batch (1-based).")]


@verb("demo")
def demo_cmd(
    out: Annotated[Path, typer.Option("--output", "-o", help="Output folder.")] = Path("demo_out"),
    size: Annotated[int, typer.Option(help="Frame size of the synthetic clips.")] = 256,
    seconds: Annotated[float, typer.Option(help="Clip length.")] = 2.0,
):
    """Run the main job on the embedded default: synthesise two dancers, extract A's poses, retarget them onto B, compute the motion flow, score each step against the synthetic ground truth, then make B dance A's motion (Dance-Your-Latents), A's music (Dance Any Beat), A's motion text (LatentMan) and A's poses from B's description in words (Dancing Avatar), all with the bundled models.

    Look at OUT/summary.png (one picture of every stage) and OUT/summary.mp4; numbers are in OUT/report.json.

    Example: [cyan]dancegen --seed 0 demo -o demo_out/[/cyan]
    """
    from rich.console import Console
    from rich.table import Table

    from dancegen import api
    from dancegen.console import info

    rep = api.demo(out, seed=state.seed, size=size, seconds=seconds, progress=lambda s: info(f"[cyan]>[/cyan] {s}"))
    table = Table(title="dancegen demo", show_header=True)
    table.add_column("step")
    table.add_column("result", justify="right")
    table.add_row("pose estimator", rep["pose_backend"])
    table.add_row("pose detection rate (dancer A)", f"{rep['pose_detection_rate_A']:.0%}")
    table.add_row("PCK@0.2 (torso) vs ground truth", f"{rep['pck@0.2_torso_A']:.3f}")
    table.add_row("retargeted frames", str(rep["retargeted_frames"]))
    for k, v in rep["flow_epe_on_body_A"].items():
        table.add_row(f"flow EPE on body, {k} (px)", f"{v:.2f}")
    m2d = rep["music2dance"]
    table.add_row("music2dance (dab-tiny)", f"{m2d['frames']} frames, {m2d['clips']} clip(s), {m2d['generate_s']:.1f} s")
    table.add_row("animate (dyl-tiny)", rep["animate"].get("skipped") or f"{rep['animate']['frames']} frames")
    t2c, da = rep["text2character"], rep["dancing_avatar"]
    table.add_row("text2character (LatentMan)", f"{t2c['frames']} frames, H_MSE {t2c['h_mse']:.1f}, {t2c['seconds']:.1f} s")
    table.add_row("text2character --poses (Dancing Avatar)", f"{da['frames']} frames, {da['seconds']:.1f} s")
    table.add_row("summary picture", rep["outputs"]["summary"])
    Console(stderr=True).print(table)
    _report(rep, json_only=True)


@verb("synth")
def synth_cmd(
    out: Annotated[Path, typer.Option("--output", "-o", help="Output folder.")],
    num_clips: Annotated[int, typer.Option(help="Number of clips (cases with --layout edit) in the whole run.")] = 1,
    layout: Annotated[str, typer.Option(help="clips | tiktok (DisCo-like) | aist (AIST++-like) | humanml3d | "
                                             "edit (motion-editing cases with an exact target).")] = "clips",
    size: Annotated[str, typer.Option(help="N (square) or WxH, 16 to 4096 px (the bundled models are 64 px; "
                                           "64 to 512 tested).")] = "256",
    seconds: Annotated[float | None, typer.Option(help="Clip length in seconds (default 4).")] = None,
    frames: Annotated[int | None, typer.Option(help="Clip length in frames (wins over --seconds).")] = None,
    fps: Annotated[float, typer.Option(help="Frame rate.")] = 24.0,
    motion: Annotated[str | None, typer.Option(help='Motion in words, e.g. "a person jumps and spins" (--layout '
                                                       "edit: the edited motion). Default: a random dance on the "
                                                       "beat.")] = None,
    camera: Annotated[str | None, typer.Option(help="static | pan | zoom | shake (default: random).")] = None,
    flow: Annotated[bool, typer.Option(help="Write forward/backward ground-truth flow.")] = True,
    workers: Annotated[int, typer.Option(help="Parallel worker processes.")] = 1,
    overwrite: Annotated[bool, typer.Option(help="Re-render clips that are already finished.")] = False,
    shard: Shard = None,
):
    """Render the synthetic dance world: dancers on the beat of generated music, with every ground truth.

    Each clip has RGB video, wav, beats, OpenPose JSON, 3D joints, forward/backward flow, depth, body-part
    coordinate maps (IUV), masks, and appearance/motion text. The global --seed makes it deterministic.

    --layout edit writes motion-editing cases case_00000/...: source/ (dancer A doing motion A), target/ (dancer A
    in the same room and camera doing motion B: the exact result of the edit) and reference/ (dancer B doing
    motion B, whose skeletons drive the edit), each a clip folder, plus case.json (seeds, prompt).

    Example: [cyan]dancegen --seed 3 synth -o synth/ --num-clips 8 --size 256 --seconds 4[/cyan]

    Example: [cyan]dancegen --seed 3 synth -o edits/ --layout edit --num-clips 4 --frames 48 --camera static[/cyan]
    """
    from dancegen import api
    from dancegen.console import progress_bar

    with progress_bar(num_clips, "synth") as bar:
        rep = api.synth(out, num_clips=num_clips, layout=layout, size=_parse_size(size), seconds=seconds,
                        num_frames=frames, fps=fps, motion=motion, seed=state.seed, workers=workers, shard=shard,
                        overwrite=overwrite, flow=flow, camera=camera, progress=lambda *a: bar.advance())
    _report({**rep, "done": len(rep["done"]), "skipped": len(rep["skipped"])},
            ("out_dir", "layout", "done", "skipped", "frames_per_second"))


@verb("evaluate")
def evaluate_cmd(
    metric: Annotated[str, typer.Option("--metric", "-m", help="NAME[,NAME...]; `--metric list` shows them all.")],
    pred: Annotated[Path | None, typer.Option(help="Generated video, frame folder, or a folder of either.")] = None,
    gt: Annotated[Path | None, typer.Option(help="Ground truth in the same layout, paired by name.")] = None,
    out: Annotated[Path | None, typer.Option("--output", "-o", help="report.json (+ .csv; its .cache/ resumes).")]
    = None,
    audio: Annotated[Path | None, typer.Option(help="Music: one WAV, or a folder of <id>.wav.")] = None,
    prompt: Annotated[str | None, typer.Option(help="Text prompt for clip-text.")] = None,
    poses: Annotated[Path | None, typer.Option(help="Driving poses (pose-mse): folder or <id>/ per video.")]
    = None,
    pred_poses: Annotated[Path | None, typer.Option(help="Poses of the generated videos (else extracted).")]
    = None,
    masks: Annotated[str | None, typer.Option(help="Person masks for *-body/*-background metrics: DIR or auto.")]
    = None,
    iuv: Annotated[Path | None, typer.Option(help="IUV maps of the prediction for h-mse (.npz or folder).")]
    = None,
    weights_dir: Annotated[Path | None, typer.Option(help="Folder with backbone weight files.")] = None,
    resize: Annotated[str | None, typer.Option(help="Resize frames first: N or WxH.")] = None,
    frames: Annotated[str, typer.Option(help="strict (frame counts must match) | min.")] = "strict",
    max_frames: Annotated[int | None, typer.Option(help="Read at most N frames per video.")] = None,
    clip_model: Annotated[str | None, typer.Option(help="CLIP folder or hub id (clip-text, clip-frame).")] = None,
    cs_clip_model: Annotated[str | None, typer.Option(help="CLIP ViT-B/32 folder or hub id for clip-music.")]
    = None,
    fvd_clips: Annotated[str, typer.Option(help="first | all | sliding 16-frame clips per video.")] = "first",
    allow_download: Annotated[bool, typer.Option(help="Fetch missing backbone files from their usual source.")]
    = False,
):
    """Score generated videos with every metric the five papers report, with the protocol next to each score.

    Frame quality (psnr, psnr-disco, ssim, l1, l1-tiktok, lpips, fid), video (fvd, fvd-videogpt, fvd-disco,
    fid-vid), no-reference (niqe, brisque, and -body/-background with --masks), consistency (frame-mse, frame-l1,
    warping-error, h-mse, clip-frame, and clip-frame-body/-background with --masks), alignment (pose-mse,
    pose-map-mse, clip-text, bas, mm-align, av-align).
    Network metrics need their standard weight files (--weights-dir or $DANCEGEN_WEIGHTS_DIR).

    Example: [cyan]dancegen evaluate -m psnr,ssim,lpips,fvd --pred gen/ --gt real/ -o report.json[/cyan]
    """
    from rich.console import Console
    from rich.table import Table

    from dancegen import api

    console = Console(stderr=True)
    if metric == "list":
        from dancegen.metrics.registry import available_metrics

        table = Table(title="metrics")
        for col in ("name", "kind", "needs", "description"):
            table.add_column(col)
        for name, spec in available_metrics().items():
            table.add_row(name, spec.kind, ",".join(spec.needs), spec.description)
        Console().print(table)
        return
    if pred is None:
        raise DanceGenError("--pred is required (the generated videos)")
    from dancegen.metrics.evaluate import report_paths, table_rows

    _at_least_one("--max-frames", max_frames)
    rep = api.evaluate(metric, pred, gt=gt, out=out, audio=audio, prompt=prompt, poses=poses, pred_poses=pred_poses,
                       masks=masks, iuv=iuv, weights_dir=weights_dir, resize=resize, frames=frames,
                       max_frames=max_frames, clip_model=clip_model, cs_clip_model=cs_clip_model, fvd_clips=fvd_clips,
                       allow_download=allow_download, device=state.device)
    table = Table(title=f"dancegen evaluate: {rep['num_videos']} video(s)")
    for col, just in (("metric", "left"), ("value", "right"), ("", "center"), ("protocol", "left")):
        table.add_column(col, justify=just)
    for row in table_rows(rep):
        table.add_row(*row)
    console.print(table)
    if out is not None:
        json_path, csv_path = report_paths(out)  # what was written: `-o dir` writes dir.json
        console.print(f"report: {json_path} (+ {csv_path.name})")
    _report(rep, json_only=True)


@verb("extract-pose")
def extract_pose_cmd(
    source: Annotated[Path, typer.Argument(help="Video, frame folder, image, or a folder of videos (batch).")],
    out: Annotated[Path, typer.Option("--output", "-o", help="Output folder (one sub-folder per video in a batch).")],
    backend: Annotated[str, typer.Option(help="blazepose (default, offline CPU) | dwpose (your ONNX files) | "
                                              "synthpose (bundled; synthetic 64 px dancers) | openpose-json "
                                              "(import).")] = "blazepose",
    fmt: Annotated[str, typer.Option("--format", help="Format of poses.npz (OpenPose JSON is always COCO-18).")]
    = "coco18",
    size: Annotated[str | None, typer.Option(help="Output size: N (longer side) or WxH. Default: the source's.")]
    = None,
    smooth: Annotated[str | None, typer.Option(help="Smooth jitter: one_euro | savgol | gaussian.")] = None,
    mode: Annotated[str, typer.Option(help="auto | image (detect every frame) | video (track).")] = "auto",
    maps: Annotated[bool, typer.Option(help="Write pose_maps/ PNGs.")] = True,
    video: Annotated[bool, typer.Option(help="Write pose.mp4.")] = True,
    masks: Annotated[bool, typer.Option(help="Write person masks (blazepose).")] = True,
    cache: Annotated[bool, typer.Option(help="Reuse an earlier result for the same input and options.")] = True,
    model_dir: Annotated[Path | None, typer.Option(help="BlazePose (or SynthPose) model folder.")] = None,
    weights_dir: Annotated[Path | None, typer.Option(help="DWPose ONNX folder.")] = None,
    max_frames: Annotated[int | None, typer.Option(help="Only the first N frames.")] = None,
    image_size: ImageSize = None,
    shard: Shard = None,
):
    """Extract the dancer's pose from every frame: OpenPose JSON (COCO-18), ControlNet pose maps, a pose video and
    person masks.

    The default backend runs MediaPipe BlazePose offline on the CPU (models fetched by `make install`, or
    `python -m dancegen.pose.backends.fetch`).

    Example: [cyan]dancegen extract-pose dance.mp4 -o dance_poses/ --smooth one_euro[/cyan]
    """
    from dancegen import api
    from dancegen.console import progress_bar

    size_v = _parse_size(size)
    _at_least_one("--max-frames", max_frames)
    with progress_bar(None, "extract-pose") as bar:
        rep = api.extract_pose(source, out, backend=backend, fmt=fmt, size=size_v, smooth=smooth, mode=mode,
                               maps=maps, video=video, masks=masks, cache=cache, model_dir=model_dir,
                               weights_dir=weights_dir, max_frames=max_frames, shard=shard,
                               image_size=_image_size(image_size),
                               progress=lambda done, total: bar.update(completed=done, total=total))
    _report(rep, ("batch", "num_frames", "detection_rate", "cached", "out_dir"))


@verb("flow")
def flow_cmd(
    source: Annotated[Path, typer.Argument(help="Poses (OpenPose JSON folder, .npz) for --method pose; a video, frame "
                                                "folder or folder of videos otherwise.")],
    out: Annotated[Path, typer.Option("--output", "-o", help="Output folder.")],
    method: Annotated[str, typer.Option(help="pose (from skeletons alone) | dis | farneback | raft.")] = "pose",
    direction: Annotated[str, typer.Option(help="forward (t -> t+1) | backward (t+1 -> t).")] = "forward",
    size: Annotated[str | None, typer.Option(help="Work size: N (longer side) or WxH. Default: the source's.")]
    = None,
    weights: Annotated[Path | None, typer.Option(help="RAFT checkpoint (torchvision raft_large .pth).")] = None,
    gt: Annotated[Path | None, typer.Option(help="Ground-truth flows .npz: report end-point error.")] = None,
    fmt: Annotated[str, typer.Option("--format", help="flo (one .flo per pair) | npz (one flows.npz).")] = "flo",
    preview: Annotated[bool, typer.Option(help="Write preview.mp4 (colour wheel).")] = True,
    iters: Annotated[int, typer.Option(help="RAFT refinement iterations.")] = 12,
    image_size: ImageSize = None,
    shard: Shard = None,
):
    """Dense motion flow for every frame pair, with colour-wheel pictures.

    [bold]pose[/bold] is the "pure motion flow" of Dance-Your-Latents: each limb's pixels move with its bone, computed
    from the skeletons alone (no image, no network). dis/farneback run OpenCV; raft needs torchvision's raft_large
    weights (--weights or $DANCEGEN_WEIGHTS_DIR/raft/).

    Example: [cyan]dancegen flow clip/poses -o clip/flow --method pose --gt clip/flow_fw.npz[/cyan]
    """
    from dancegen import api

    size_v = _parse_size(size)
    if isinstance(size_v, tuple):
        size_v = size_v[::-1]  # compute_flow takes (height, width)
    from dancegen.console import spinner

    with spinner(f"flow ({method})"):
        rep = api.flow(source, out, method=method, direction=direction, size=size_v, weights=weights, gt=gt,
                       output_format=fmt, preview=preview, iters=iters, device=state.device, shard=shard,
                       image_size=_image_size(image_size))
    _report(rep, ("batch", "method", "num_pairs", "ms_per_pair", "gt"))


# Options the generating verbs spell the same way (animate and music2dance take all; the others what they use).
ModelOpt = Annotated[str | None, typer.Option(
    "--model", help="A bundled name, a local folder (base weights in the diffusers layout, or a train / "
                    "finetune-oneshot run folder, which names its method), a single-file SD-1.5 .safetensors, or a "
                    "Hugging Face id (local cache only, unless --allow-download). Default: the bundled model.")]
MethodOpt = Annotated[str | None, typer.Option(
    "--method", help="Method id (default: the one recorded in --model, else the verb's default).")]
RecipeOpt = Annotated[Path | None, typer.Option(help="Recipe YAML (inference settings).")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="Recipe override key=value (repeatable).")]
StepsOpt = Annotated[int | None, typer.Option(help="Sampling steps (default: the recipe's).")]
GuidanceOpt = Annotated[float | None, typer.Option(help="Classifier-free guidance scale (default: the recipe's).")]
DtypeOpt = Annotated[str, typer.Option(help="auto (fp32 on CPU, bf16/fp16 on GPU) | fp32 | fp16 | bf16.")]
OffloadOpt = Annotated[bool, typer.Option("--cpu-offload", help="Keep each network on the CPU until it runs (GPU "
                                                                "memory).")]
SlicingOpt = Annotated[bool | None, typer.Option("--vae-slicing/--no-vae-slicing", help="Decode one frame at a "
                                                                                       "time (default: on for GPUs).")]
TilingOpt = Annotated[bool, typer.Option("--vae-tiling", help="Decode in tiles (large frames).")]
LoraOpt = Annotated[list[str] | None, typer.Option("--lora", help="LoRA file (diffusers or kohya .safetensors), "
                                                                  "PATH or PATH:WEIGHT (repeatable).")]
DownloadOpt = Annotated[bool, typer.Option("--allow-download", help="Fetch a Hugging Face model missing from the "
                                                                    "local cache (or set DANCEGEN_ALLOW_DOWNLOAD=1).")]


def _shared(model, method, dtype, cpu_offload, vae_slicing, vae_tiling, lora, allow_download, **more) -> dict:
    """The shared generating options as api keyword arguments (device and seed come from the global options)."""
    return dict(model=model, method=method, dtype=dtype, cpu_offload=cpu_offload, vae_slicing=vae_slicing,
                vae_tiling=vae_tiling, lora=list(lora or []), allow_download=allow_download, device=state.device,
                seed=state.seed, **more)


@verb("animate")
def animate_cmd(
    ref: Annotated[Path | None, typer.Option("--ref", help="Reference photo of the person to animate (methods "
                                                           "whose model holds its source need none).")] = None,
    poses: Annotated[Path | None, typer.Option("--poses", help="Driving poses: OpenPose JSON folder, .npz, or a "
                                                               "video / frame folder (poses are estimated).")] = None,
    out: Annotated[Path | None, typer.Option("--output", "-o", help="Output video (.mp4, .gif, or a folder of "
                                                                    "PNGs).")] = None,
    model: ModelOpt = None,
    method: MethodOpt = None,
    background: Annotated[Path | None, typer.Option(help="Background image (default: the reference minus the "
                                                         "person).")] = None,
    ref_mask: Annotated[str, typer.Option(help="Person mask of the reference: PATH, auto (pose backend) or none.")]
    = "auto",
    retarget: Annotated[bool, typer.Option(help="Put the driving motion on the reference body first.")] = True,
    recipe: RecipeOpt = None,
    set_: SetOpt = None,
    frames: Annotated[int | None, typer.Option(help="Generate at most N frames.")] = None,
    steps: StepsOpt = None,
    guidance: GuidanceOpt = None,
    size: Annotated[str | None, typer.Option(help="Output size N or WxH (default: the model's).")] = None,
    dtype: DtypeOpt = "auto",
    cpu_offload: OffloadOpt = False,
    vae_slicing: SlicingOpt = None,
    vae_tiling: TilingOpt = False,
    lora: LoraOpt = None,
    allow_download: DownloadOpt = False,
    preview: Annotated[bool, typer.Option(help="Also write OUT.preview.mp4 (reference | pose | output).")] = True,
    dry_run: Annotated[bool, typer.Option(help="Build the pipeline and print its size; generate nothing.")] = False,
):
    """Make the person in a photo dance the driving poses (default method: Dance-Your-Latents).

    Dance-Your-Latents: the driving poses are retargeted onto the reference body, pose flow guides the subspaces,
    every frame starts from the same noise, and long videos run in 16-frame windows. Writes OUT, OUT.recipe.yaml and
    OUT.preview.mp4. `--method` (or a `--model` run folder that names its method) picks another method.

    Example: [cyan]dancegen animate --ref photo.png --poses dance_poses/openpose_json -o dance.mp4[/cyan]
    """
    from dancegen import api
    from dancegen.console import info

    if out is None:
        raise InputError("animate needs --output / -o (the video to write)")
    size_v = _parse_size(size)
    if isinstance(size_v, int):
        size_v = (size_v, size_v)
    rep = api.animate(ref, poses, out, recipe=recipe, overrides=set_, background=background,
                      ref_mask=None if ref_mask.lower() == "none" else ref_mask, retarget=retarget, frames=frames,
                      steps=steps, guidance_scale=guidance, size=size_v, dry_run=dry_run, preview=preview,
                      progress=lambda s: info(f"[cyan]>[/cyan] {s}"),
                      **_shared(model, method, dtype, cpu_offload, vae_slicing, vae_tiling, lora, allow_download))
    _report(rep, ("output", "preview", "frames", "seconds", "method", "kind", "variant", "size", "parameters",
                  "dry_run"))


@verb("music2dance")
def music2dance_cmd(
    song: Annotated[Path, typer.Argument(help="Music file (wav/flac/ogg/mp3/m4a, or a video's audio track).")],
    ref: Annotated[Path, typer.Option("--ref", help="Photo of the person who dances (centre square crop).")],
    out: Annotated[Path, typer.Option("--output", "-o", help="Output .mp4 (the music is its audio track).")],
    seconds: Annotated[float | None, typer.Option(help="Use this many seconds of the song (default: all).")] = None,
    start: Annotated[float, typer.Option(help="Start this many seconds into the song.")] = 0.0,
    fps: Annotated[float | None, typer.Option(help="Output frame rate (default: the model's; other rates are "
                                                   "interpolated in flow space).")] = None,
    model: ModelOpt = None,
    method: MethodOpt = None,
    steps: StepsOpt = None,
    guidance: GuidanceOpt = None,
    sampler: Annotated[str | None, typer.Option(help="ddim | ddpm (default: the model's recipe).")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Recipe override key=value, e.g. "
                                                                 "inference.cond_scale=2 (guidance; repeatable).")] = None,
    scene: Annotated[Path | None, typer.Option(help="Choreograph anyone: a dance-scene frame whose dancer the "
                                                    "person of --ref replaces.")] = None,
    ref_mask: Annotated[str, typer.Option(help="With --scene: person mask of --ref (PATH or auto).")] = "auto",
    scene_mask: Annotated[str, typer.Option(help="With --scene: dancer mask of the scene (PATH or auto).")] = "auto",
    dtype: DtypeOpt = "auto",
    cpu_offload: OffloadOpt = False,
    vae_slicing: SlicingOpt = None,
    vae_tiling: TilingOpt = False,
    lora: LoraOpt = None,
    allow_download: DownloadOpt = False,
):
    """Make the person in a photo dance to a song (default method: Dance Any Beat, music -> latent flows -> video).

    The video lasts as long as the music (one clip of the model's length after another, overlapping so the motion
    carries across the seams) and carries the music as its audio track. Writes OUT and OUT.recipe.yaml.

    Example: [cyan]dancegen music2dance song.wav --ref photo.png -o dance.mp4 --seconds 10[/cyan]
    """
    from dancegen import api
    from dancegen.console import progress_bar

    if sampler is not None and sampler not in ("ddim", "ddpm"):
        raise InputError(f"--sampler must be ddim or ddpm, got {sampler!r}")
    with progress_bar(None, "music2dance") as bar:
        rep = api.music2dance(song, ref, out, seconds=seconds, start=start, fps=fps, steps=steps,
                              guidance_scale=guidance, sampler=sampler, overrides=set_, scene=scene,
                              ref_mask=ref_mask, scene_mask=scene_mask,
                              progress=lambda i, n: bar.update(completed=i, total=n),
                              **_shared(model, method, dtype, cpu_offload, vae_slicing, vae_tiling, lora,
                                        allow_download))
    _report(rep, ("output", "frames", "fps", "seconds", "clips", "music_beats", "sampler", "steps", "method",
                  "total_s"))


@verb("text2character")
def text2character_cmd(
    prompt: Annotated[str | None, typer.Argument(help="The character (and, without --motion, its motion), e.g. "
                                                      "\"a dancer in a red t-shirt and blue trousers\"; with "
                                                      "--poses it may be replaced by --clothes / --face / "
                                                      "--place.")] = None,
    out: Annotated[Path | None, typer.Option("--output", "-o", help="Output video (.mp4, .mov or .gif).")] = None,
    motion: Annotated[str | None, typer.Option(help="The motion: words (\"a person jumps and spins\", through the "
                                                    "text-to-motion model) or a motion file (MDM results.npy, "
                                                    "HumanML3D .npy, AIST++ .pkl, BVH).")] = None,
    poses: Annotated[Path | None, typer.Option(help="Driving poses (OpenPose JSON folder, .json frame or .npz): "
                                                    "Dancing Avatar.")] = None,
    clothes: Annotated[str | None, typer.Option(help="Dancing Avatar: the clothes, e.g. \"white pleated skirt\" "
                                                     "(refined to 20 words).")] = None,
    face: Annotated[str | None, typer.Option(help="Dancing Avatar: the face and hair, e.g. \"short black hair\" "
                                                  "(refined to 20 words).")] = None,
    place: Annotated[str | None, typer.Option(help="Dancing Avatar: the place, e.g. \"in a classroom\".")] = None,
    prompt_opt: Annotated[str | None, typer.Option("--prompt", help="The same as PROMPT, as an option: one free "
                                                                    "text instead of --clothes / --face / --place.")]
    = None,
    background: Annotated[Path | None, typer.Option(help="Dancing Avatar: a background image used as the shared "
                                                         "plate (default: inpainted from the first frame).")] = None,
    character: Annotated[Path | None, typer.Option(help="Dancing Avatar: a character pack folder (refined words + "
                                                        "clothes/face LoRAs) to reuse; default: made and cached "
                                                        "as OUT.character.")] = None,
    negative_prompt: Annotated[str | None, typer.Option(help="Negative prompt (default: the recipe's).")] = None,
    controlnet: Annotated[list[str] | None, typer.Option(help="ControlNet folder or hub id: LatentMan's depth net "
                                                              "(default: the bundled controlnet-depth-tiny), Dancing "
                                                              "Avatar's OpenPose net (default: "
                                                              "controlnet-openpose-tiny).")] = None,
    frames: Annotated[int | None, typer.Option(help="Video frames (default 8).")] = None,
    fps: Annotated[float | None, typer.Option(help="Output frame rate (default: motion fps / stride).")] = None,
    size: Annotated[str | None, typer.Option(help="Frame side in pixels (default: 512, bundled models 64).")] = None,
    model: ModelOpt = None,
    method: MethodOpt = None,
    recipe: Annotated[Path | None, typer.Option(help="Recipe YAML (e.g. recipes/latentman/t2_sla.yaml).")] = None,
    steps: StepsOpt = None,
    guidance: GuidanceOpt = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Recipe override key=value, e.g. "
                                                                 "sla.enabled=false (repeatable).")] = None,
    dtype: DtypeOpt = "auto",
    allow_download: DownloadOpt = False,
    preview: Annotated[bool, typer.Option(help="Also write OUT.preview (depth | output).")] = True,
):
    """A character described in words performs a motion, zero-shot (default method: LatentMan).

    The motion (words through the text-to-motion model, or a motion file) drives a rendered body; a text-to-image
    model with a depth ControlNet draws each frame, kept consistent by cross-frame attention, spatial latent
    alignment and pixel-wise guidance. Writes OUT, OUT.recipe.yaml, OUT.depth and OUT.preview. Without --model the
    bundled 64 px toy models run (made for the synthetic world; pass SD-1.5 and a depth ControlNet for real videos).

    With --poses (or --method dancing-avatar) Dancing Avatar runs: --clothes / --face / --place are refined into
    the prompt, clothes and face LoRAs keep the character, one inpainted background plate is shared by every frame
    and a previous-frame ControlNet ties each frame to the one before. Writes OUT, OUT.recipe.yaml, OUT.plate.png,
    OUT.character/ and OUT.preview.

    Example: [cyan]dancegen text2character "a dancer in a red t-shirt and blue trousers" --motion "a person jumps
    and spins" -o out.mp4[/cyan]

    Example: [cyan]dancegen text2character --clothes "white pleated skirt" --face "short black hair" --place "in a
    classroom" --poses dance/openpose_json -o out.mp4[/cyan]
    """
    from dancegen import api
    from dancegen.console import info

    size_v = _parse_size(size) if size is not None else None
    if isinstance(size_v, int):
        size_v = (size_v, size_v)
    if out is None:
        raise InputError("text2character needs --output / -o (the video to write)")
    if prompt is not None and prompt_opt is not None:
        raise InputError("give the prompt once: as PROMPT or as --prompt, not both")
    prompt = prompt if prompt is not None else prompt_opt
    rep = api.text2character(prompt, out, motion=motion, negative_prompt=negative_prompt, poses=poses,
                             clothes=clothes, face=face, place=place, background=background, character=character,
                             controlnet=list(controlnet or []), frames=frames, fps=fps, size=size_v, recipe=recipe,
                             steps=steps, guidance_scale=guidance, overrides=set_, preview=preview,
                             progress=lambda s: info(f"[cyan]>[/cyan] {s}"),
                             **_shared(model, method, dtype, False, None, False, [], allow_download))
    _report(rep, ("output", "preview", "depth", "iuv", "plate", "character", "frames", "fps", "seconds", "h_mse",
                  "method",
                  "base", "size", "note"))


@verb("train")
def train_cmd(
    recipe: Annotated[Path, typer.Option("--recipe", help="Recipe YAML; its `method:` picks the method.")],
    set_: Annotated[list[str] | None, typer.Option("--set", help="Recipe override key=value (repeatable).")] = None,
    out: Annotated[Path | None, typer.Option("--output", "-o", help="Run folder (default runs/<recipe name>).")]
    = None,
    resume: Annotated[str, typer.Option(help="auto | never | PATH of a checkpoint folder.")] = "auto",
):
    """Train a method from a recipe (checkpoints resume exactly; the model lands in OUT/model).

    Multi-GPU: `accelerate launch -m dancegen.cli train --recipe ...`.

    Example: [cyan]dancegen train --recipe recipes/dance_your_latents/tiny_synth.yaml -o runs/dyl-tiny[/cyan]
    """
    from dancegen import api
    from dancegen.console import info

    rep = api.train(recipe, overrides=set_, out=out, resume=resume, device=state.device,
                    progress=lambda s: info(f"[cyan]>[/cyan] {s}"))
    _report(rep, ("output_dir", "model", "stages"))


@verb("finetune-oneshot")
def finetune_oneshot_cmd(
    source: Annotated[Path, typer.Option("--source", help="The clip to edit: a video, a frame folder, or one photo "
                                                          "(repeated).")],
    prompt: Annotated[str, typer.Option("--prompt", help="What the source shows (the UNet and ControlNet take it).")],
    out: Annotated[Path, typer.Option("--output", "-o", help="Run folder; the case lands in OUT/model.")],
    poses: Annotated[Path | None, typer.Option("--source-poses", help="Skeletons of the source (OpenPose JSON "
                                                                      "folder / .npz); default: estimated.")] = None,
    masks: Annotated[str | None, typer.Option("--masks", help="Person masks: a folder of PNGs, auto (segmenter, else "
                                                              "drawn from the skeleton), skeleton or none.")] = None,
    target: Annotated[Path | None, typer.Option("--target", help="Also edit right away: the skeletons to perform "
                                                                 "(with --video).")] = None,
    video: Annotated[Path | None, typer.Option("--video", help="The edited video to write with --target.")] = None,
    model: ModelOpt = None,
    controlnet: Annotated[str | None, typer.Option("--controlnet", help="OpenPose ControlNet folder or hub id "
                                                                        "(default: bundled).")] = None,
    recipe: RecipeOpt = None,
    set_: SetOpt = None,
    steps: Annotated[int | None, typer.Option("--steps", help="Steps of each fine-tuning stage.")] = None,
    frames: Annotated[int | None, typer.Option("--frames", help="Source frames to fine-tune on.")] = None,
    resume: Annotated[str, typer.Option(help="auto | never | PATH of a checkpoint folder.")] = "auto",
    allow_download: Annotated[bool, typer.Option("--allow-download", help="Let hub ids download.")] = False,
):
    """Fine-tune Edit-Your-Motion on one clip (temporal stage on the masked person, then spatial stage), resumable.

    Then [cyan]dancegen animate --method edit-your-motion --model OUT --poses TARGET -o edit.mp4[/cyan] makes the
    person perform other skeletons (or pass --target and --video here).

    Example: [cyan]dancegen finetune-oneshot --source case/source/video.mp4 --source-poses
    case/source/openpose_json --masks case/source/masks --prompt "a dancer in a purple shirt" -o runs/case1[/cyan]
    """
    from dancegen import api
    from dancegen.console import info

    rep = api.finetune_oneshot(source, prompt, out, poses=poses, masks=masks, target=target, video=video, model=model,
                               controlnet=controlnet, recipe=recipe, overrides=set_, steps=steps, frames=frames,
                               resume=resume, device=state.device, seed=state.seed, allow_download=allow_download,
                               progress=lambda s: info(f"[cyan]>[/cyan] {s}"))
    _report(rep, ("output_dir", "model", "stages", "edit"))


weights_app = typer.Typer(help="Every model dancegen knows: bundled toys and real weights (where published, licence, "
                                "size, what uses it, whether it is on this machine).", no_args_is_help=True,
                          rich_markup_mode="rich")
app.add_typer(weights_app, name="weights")


@verb("list", _group=weights_app)
def weights_list_cmd(
    kind: Annotated[str | None, typer.Option(help="bundled | hub | file.")] = None,
    used_by: Annotated[str | None, typer.Option(help="Only models a method, verb or metric uses.")] = None,
    long: Annotated[bool, typer.Option("--long", help="Every field: source, how to get it.")] = False,
    json_: Annotated[bool, typer.Option("--json", help="JSON on stdout.")] = False,
):
    """List the models: nothing is downloaded; `local` says where each one was found on this machine.

    Example: [cyan]dancegen weights list --used-by dance-your-latents --long[/cyan]
    """
    from dancegen.catalog import as_json, format_details, format_table, list_models

    entries = list_models(kind, used_by)
    typer.echo(as_json(entries) if json_ or state.json else format_details(entries) if long else format_table(entries))


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
