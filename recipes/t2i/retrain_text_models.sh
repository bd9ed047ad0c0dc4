#!/usr/bin/env bash
# Retrain the bundled models of the text methods in order, each on the one before it, then score them:
#   t2i-tiny (t2i_tiny.yaml: its autoencoder, then the base) -> controlnet-openpose-tiny, controlnet-depth-tiny (on that
#   base) -> dancing-avatar-tiny (on the new t2i-tiny + OpenPose ControlNet, so only after they are bundled).
#
#   bash recipes/t2i/retrain_text_models.sh train    # the three runs in runs/ (each resumes where it stopped)
#   bash recipes/t2i/retrain_text_models.sh bundle   # copy them over the bundled t2i-tiny and both ControlNets (fp16)
#   bash recipes/t2i/retrain_text_models.sh avatar   # retrain and bundle dancing-avatar-tiny on the new base
#   bash recipes/t2i/retrain_text_models.sh score    # the quality runners whose numbers the bundled tests assert
#
# DEVICE=cuda runs the training on a GPU (minutes instead of hours on 2 CPU cores: measured here: 35 min the autoencoder,
# 20 min the base, 7 min each ControlNet, 20-40 min the previous-frame module). After `bundle` the quality tests
# (tests/test_t2i_bundled.py, test_latentman_bundled.py, test_edit_your_motion_bundled.py,
# test_dancing_avatar_bundled.py) hold numbers of the old models: `score` prints the new ones to put there and into
# the READMEs / results.yml.
set -euo pipefail
cd "$(dirname "$0")/../.."
DEVICE="${DEVICE:-cpu}"
RUNS="${RUNS:-runs}"
BASE="$RUNS/t2i-tiny"

train() {
  dancegen train --recipe recipes/t2i/t2i_tiny.yaml -o "$BASE" --set "train.device=$DEVICE"
  for c in openpose depth; do
    dancegen train --recipe "recipes/t2i/controlnet_${c}_tiny.yaml" -o "$RUNS/controlnet-$c-tiny" \
      --set "model.base=$BASE/model" --set "train.device=$DEVICE"
  done
}

bundle() {
  python -m dancegen.core.bundle "$BASE/model" t2i-tiny
  for c in openpose depth; do
    python -m dancegen.core.bundle "$RUNS/controlnet-$c-tiny/model" "controlnet-$c-tiny"
  done
}

avatar() {
  dancegen train --recipe recipes/dancing_avatar/prev_frame_tiny.yaml -o "$RUNS/dancing-avatar-tiny" \
    --set "train.device=$DEVICE"
  python -m dancegen.core.bundle "$RUNS/dancing-avatar-tiny/model" dancing-avatar-tiny
}

score() {
  mkdir -p "$RUNS/scores"
  python -m dancegen.t2i.quality --clips 24 --steps 12 -o "$RUNS/scores/t2i.json"
  python -m dancegen.methods.latentman.quality --count 4 --json "$RUNS/scores/latentman.json"
  python -m dancegen.methods.edit_your_motion.quality --count 3 --cases "$RUNS/scores/eym_cases" \
    --json "$RUNS/scores/edit_your_motion.json"
  python -m dancegen.methods.dancing_avatar.quality --count 3 --frames 6 -o "$RUNS/scores/dancing_avatar.json"
}

case "${1:-}" in
  train) train ;;
  bundle) bundle ;;
  avatar) avatar ;;
  score) score ;;
  *) echo "usage: bash $0 train|bundle|avatar|score" >&2; exit 2 ;;
esac
