"""Dance Any Beat / DabFusion (Wang et al.): music-driven dance video by latent flow diffusion (specs/dance-any-beat.md).

Modules:
    music: the music encoder e = concat(e_c, e_w, e_b) (spec §2.2): frozen CLAP / Wav2CLIP embedding functions,
        MLP adapters trained with InfoNCE, the offline `ScratchMusicEncoder`, and the conditioning width De.
"""
