"""Video, image, audio and pose-folder I/O, atomic writes and resumable batch manifests.

At this boundary video is `(F, H, W, C)` uint8 RGB with its fps; models see `(B, C, F, H, W)` floats.
"""
