"""The bundled text-to-image model and its ControlNets: captions, data, training and quality on the synthetic world.

LatentMan, Dancing Avatar and Edit-Your-Motion run on SD-1.5 with an OpenPose or depth ControlNet. `t2i-tiny`,
`controlnet-openpose-tiny` and `controlnet-depth-tiny` are this project's small stand-ins in exactly those diffusers
layouts, trained here on `dancegen synth` (recipes in `recipes/t2i/`), so every text verb runs on a fresh CPU machine.
This package sits beside the methods: it uses core/ and the domain libraries; no method imports it (they load the
bundled models by name).
"""
