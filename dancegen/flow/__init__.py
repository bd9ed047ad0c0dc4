"""Motion flow: `.flo`/`.npz` I/O, colour-wheel pictures, warping, EPE, pose-driven flow and estimators.

Contract (DESIGN.md, "Data contracts"): flow is `(F-1, 2, H, W)` float32 in pixels, channel 0 = dx, 1 = dy.
"forward" flow[t] maps frame t to t+1 (a pixel at p in frame t is at p + flow[t](p) in frame t+1), "backward"
flow[t] maps frame t+1 to t. Pose-driven flow follows Dance-Your-Latents §4.4.1 (specs/dance-your-latents.md §2.5).

Submodules (import them directly; this package imports nothing heavy):
    io          write_flo / read_flo / save_flow_npz / load_flow_npz / write_flow_folder
    vis         flow_to_color (Baker et al. colour wheel)
    warp        backward_warp, resize_flow, epe, flow_stats
    pose_flow   pose_flow, pose_sequence_flow, pose_flow_to_reference (flow from skeletons alone)
    estimators  estimate_flow (DIS, Farneback, RAFT)
    raft        RAFT-large in torch, state-dict compatible with torchvision's raft_large
    compute     compute_flow (the `dancegen flow` verb)
"""

FLOW_DIRECTIONS = ("forward", "backward")
