"""Does the text-to-motion model do what the text asks? Primitive detectors on joints, and hit rates on held-out texts.

    python -m dancegen.motion.t2m.quality [--model FOLDER] [--count 8] [--steps 50] [--guidance 2.5] [--json]

Detectors (`detect`, on `(T, 22, 3)` joints, Y-up metres; heights are taken above the clip's lowest foot joint, so
a motion floating above or sinking below y = 0 is judged the same). Thresholds were set from the real synthetic
motions of every primitive (20 held-out clips each) halfway between the asked primitive's range and the others':

| primitive | fires when | real asked / worst other |
|---|---|---|
| jumps | both feet leave the floor: the lowest foot joint rises > 0.12 m (the pelvis with them) | 0.32 / 0.01 m |
| waves left / right arm | that wrist rises > 0.15 m above its shoulder | >= 0.37 / <= -0.07 m (claps) |
| waves both arms | both wrists > 0.15 m above their shoulders in one frame | |
| raises arms | both wrists > 0.1 m above the head in one frame | >= 0.22 (waves both) / -0.09 m |
| spins, turns | the heading (hip across-vector yaw, unwrapped) changes by > 120 degrees | >= 180 / 0 deg |
| squats | the pelvis drops below 0.75 x the leg length (hip-knee-ankle) above the floor | 0.55 / >= 0.94 |
| kicks | one foot rises > 0.3 m above the other | >= 0.53 / <= 0.06 m |
| claps | the wrists come within 0.08 m of each other | <= 0.05 / >= 0.11 m (spins) |
| walks forward | the pelvis ends > 0.5 m (horizontally) from where it started | >= 0.88 / <= 0.28 m |

Some detectors fire on other primitives by design of the world (a jump's apex raises both arms, so "raises arms"
and "waves both arms" fire on jumps; a spin is a change of heading like a turn), which is why the hit rate of the
asked primitive is compared with a control.

Protocol (`evaluate`): for each of the 11 detectable primitives, `count` held-out one-primitive texts (canonical or
paraphrased, drawn like the training texts from master seed 7, which training never used) are generated with seeds
0 .. count-1. *asked*: the fraction of those motions where the asked primitive's detector fires. *shuffled* (the
control): the same seeds with the text of another, randomly drawn primitive (any of the 14), scored with the
*asked* primitive's detector. *real* (the ceiling): the detector on the synthetic world's own motion for the same
held-out clips.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from dancegen.motion.t2m.data import heading

PELVIS, L_HIP, R_HIP, L_KNEE, R_KNEE, L_ANKLE, R_ANKLE = 0, 1, 2, 4, 5, 7, 8
L_FOOT, R_FOOT, HEAD, L_SHOULDER, R_SHOULDER, L_WRIST, R_WRIST = 10, 11, 15, 16, 17, 20, 21
FEET = (L_ANKLE, R_ANKLE, L_FOOT, R_FOOT)

#: Detector thresholds (see the module docstring).
THRESHOLDS = {"air": 0.12, "wave": 0.15, "raise": 0.1, "yaw": 120.0, "squat": 0.75, "kick": 0.3, "clap": 0.08,
              "walk": 0.5}
#: Primitives with a detector, in report order.
DETECTABLE = ("jumps", "spins", "turns", "waves both arms", "waves left arm", "waves right arm", "raises arms",
              "claps", "kicks", "squats", "walks forward")


def measures(joints: np.ndarray) -> dict[str, float]:
    """The quantities the detectors threshold, for `(T, 22, 3)` joints."""
    j = np.asarray(joints, dtype=np.float64)
    floor = j[:, FEET, 1].min()
    leg = float(np.median(np.linalg.norm(j[:, L_HIP] - j[:, L_KNEE], axis=-1)
                          + np.linalg.norm(j[:, L_KNEE] - j[:, L_ANKLE], axis=-1)))
    wave_l = j[:, L_WRIST, 1] - j[:, L_SHOULDER, 1]
    wave_r = j[:, R_WRIST, 1] - j[:, R_SHOULDER, 1]
    yaw = np.degrees(np.unwrap(heading(j)))
    foot_l = j[:, [L_ANKLE, L_FOOT], 1].max(1)
    foot_r = j[:, [R_ANKLE, R_FOOT], 1].max(1)
    return {
        "air": float((j[:, FEET, 1].min(1) - floor).max()),
        "wave_left": float(wave_l.max()),
        "wave_right": float(wave_r.max()),
        "wave_both": float(np.minimum(wave_l, wave_r).max()),
        "raise": float((np.minimum(j[:, L_WRIST, 1], j[:, R_WRIST, 1]) - j[:, HEAD, 1]).max()),
        "yaw": float(yaw.max() - yaw.min()),
        "squat": float((j[:, PELVIS, 1] - floor).min() / max(leg, 1e-6)),
        "kick": float(np.abs(foot_l - foot_r).max()),
        "clap": float(np.linalg.norm(j[:, L_WRIST] - j[:, R_WRIST], axis=-1).min()),
        "walk": float(np.linalg.norm(j[-1, PELVIS, [0, 2]] - j[0, PELVIS, [0, 2]])),
    }


def detect(joints: np.ndarray) -> dict[str, bool]:
    """Which of the `DETECTABLE` primitives `joints` `(T, 22, 3)` shows."""
    m, th = measures(joints), THRESHOLDS
    return {
        "jumps": m["air"] > th["air"],
        "spins": m["yaw"] > th["yaw"],
        "turns": m["yaw"] > th["yaw"],
        "waves both arms": m["wave_both"] > th["wave"],
        "waves left arm": m["wave_left"] > th["wave"],
        "waves right arm": m["wave_right"] > th["wave"],
        "raises arms": m["raise"] > th["raise"],
        "claps": m["clap"] < th["clap"],
        "kicks": m["kick"] > th["kick"],
        "squats": m["squat"] < th["squat"],
        "walks forward": m["walk"] > th["walk"],
    }


def heldout_cases(count: int, seed: int = 7) -> list[dict]:
    """`count` held-out cases per detectable primitive: asked text, shuffled (other primitive's) text, clip seed."""
    from dancegen.motion.t2m.data import sample_text
    from dancegen.synth.layouts import clip_seed
    from dancegen.synth.motion import VOCABULARY

    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 202]))
    cases = []
    for p in DETECTABLE:
        for k in range(count):
            other = [q for q in VOCABULARY if q != p]
            q = other[int(rng.integers(len(other)))]
            cases.append({"primitive": p, "text": sample_text([p], rng), "control_primitive": q,
                          "control_text": sample_text([q], rng), "clip_seed": clip_seed(seed, 10_000 + k),
                          "seed": k})
    return cases


def evaluate(model, count: int = 8, seed: int = 7, steps: int = 50, guidance: float = 2.5,
             batch_size: int = 64, real: bool = True) -> dict:
    """Hit rates of the asked primitive (generated), the shuffled-text control and the real motions (see the
    module docstring). Returns `{"per_primitive": {p: {asked, shuffled, real}}, "asked", "shuffled", "real",
    "count", ...}` (the three summaries are means over primitives)."""
    from dancegen.motion.t2m.data import canonicalize, synth_motion

    cases = heldout_cases(count, seed)
    texts = [c["text"] for c in cases] + [c["control_text"] for c in cases]
    seeds = [c["seed"] for c in cases] * 2
    motions = []
    for i in range(0, len(texts), batch_size):
        motions += model.generate_batch(texts[i:i + batch_size], seeds=seeds[i:i + batch_size], guidance=guidance,
                                        steps=steps)
    n = len(cases)
    per: dict[str, dict[str, list]] = {p: {"asked": [], "shuffled": [], "real": []} for p in DETECTABLE}
    for k, c in enumerate(cases):
        p = c["primitive"]
        per[p]["asked"].append(detect(motions[k].joints)[p])
        per[p]["shuffled"].append(detect(motions[n + k].joints)[p])
        if real:
            per[p]["real"].append(detect(canonicalize(synth_motion(c["clip_seed"], [p])))[p])
    rates = {p: {k: (float(np.mean(v)) if v else None) for k, v in d.items()} for p, d in per.items()}
    summary = {k: float(np.mean([r[k] for r in rates.values()])) for k in ("asked", "shuffled")}
    if real:
        summary["real"] = float(np.mean([r["real"] for r in rates.values()]))
    return {"per_primitive": rates, **summary, "count": count, "seed": seed, "steps": steps, "guidance": guidance}


def format_report(rep: dict) -> str:
    lines = [f"{'primitive':20s} {'asked':>7s} {'shuffled':>9s} {'real':>6s}"]
    for p, r in rep["per_primitive"].items():
        real = "" if r["real"] is None else f"{r['real']:6.2f}"
        lines.append(f"{p:20s} {r['asked']:7.2f} {r['shuffled']:9.2f} {real:>6s}")
    lines.append(f"{'mean':20s} {rep['asked']:7.2f} {rep['shuffled']:9.2f} "
                 + (f"{rep['real']:6.2f}" if "real" in rep else ""))
    lines.append(f"({rep['count']} held-out texts per primitive, master seed {rep['seed']}, {rep['steps']} DDIM "
                 f"steps, guidance {rep['guidance']:g})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from dancegen.errors import DanceGenError
    from dancegen.motion.t2m.model import TextToMotion

    ap = argparse.ArgumentParser(prog="python -m dancegen.motion.t2m.quality", description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model folder (default: the bundled t2m-tiny)")
    ap.add_argument("--count", type=int, default=8, help="held-out texts per primitive")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--guidance", type=float, default=2.5)
    ap.add_argument("--seed", type=int, default=7, help="held-out master seed")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    try:
        rep = evaluate(TextToMotion.load(args.model), args.count, args.seed, args.steps, args.guidance)
    except DanceGenError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    print(json.dumps(rep, indent=2) if args.json else format_report(rep))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
