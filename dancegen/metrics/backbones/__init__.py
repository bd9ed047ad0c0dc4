"""Feature networks for the network-backed metrics (issue #3): FID Inception, LPIPS trunks, I3D, 3D ResNet, CLIP.

Each network is defined here with the parameter names of its standard published weight file, so that file loads
with `load_state_dict(strict=True)`; `dancegen.metrics.weights` finds and hash-checks the files. The submodules
import torch at module level, so import them only on the code paths that run a network (this `__init__` stays
cheap and imports nothing).
"""
