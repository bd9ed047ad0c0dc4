"""Music analysis for music-to-dance methods (domain library: numpy/scipy/librosa, no torch, librosa imported lazily).

Modules:
    beats: FACT-style beat tracking at the video frame rate (`beat_frames`), per-frame beat vectors
        (`beat_vector`) and the AIST++ tempo prior (`aist_start_bpm`).
    song: `Song` and `load_song` (mono, resampled, validated audio) and `frame_count` (whole video frames covered).
    features: `frame_features` -> `MusicFeatures`, per-video-frame log-mel / onset / tempogram / beat features for a
        music encoder trained from scratch, computed once per song and sliced into clip windows.
"""
