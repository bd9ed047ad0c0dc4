"""Shared GPU core: video UNet, attention processors, spatio-temporal blocks, schedulers and training glue.

Follows DESIGN.md (core/) and the Dance-Your-Latents / Edit-Your-Motion / LatentMan specs. Submodules import torch
and diffusers; this package ``__init__`` stays import-free so ``import dancegen`` is cheap.
"""
