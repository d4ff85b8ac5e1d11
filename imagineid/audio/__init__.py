"""Audio features: log-mel at 100 Hz aligned to 25 fps video, MFCC, input checks.

    from imagineid.audio import check_audio, mel_for_frames, load_log_mel
    mel = load_log_mel("clip.mp4", n_frames=75)   # (300, 80) float32, 4 mel rows per video frame

See `imagineid.audio.features` for the conventions (window, mel scale, log floor).
"""

from imagineid.audio.features import (
    LOG_FLOOR,
    MEL_RATE,
    MIN_SECONDS,
    N_MELS,
    SAMPLE_RATE,
    SILENCE_DBFS,
    AudioFeatureError,
    InvalidAudioError,
    ShortAudioError,
    SilentAudioError,
    SpeakerEncoderUnavailableError,
    audio_levels,
    check_audio,
    load_log_mel,
    log_mel,
    mel_envelope,
    mel_filterbank,
    mel_for_frames,
    mel_frames_per_video_frame,
    mel_frequencies,
    mfcc,
    video_frames_for,
)

__all__ = [
    "LOG_FLOOR",
    "MEL_RATE",
    "MIN_SECONDS",
    "N_MELS",
    "SAMPLE_RATE",
    "SILENCE_DBFS",
    "AudioFeatureError",
    "InvalidAudioError",
    "ShortAudioError",
    "SilentAudioError",
    "SpeakerEncoderUnavailableError",
    "audio_levels",
    "check_audio",
    "load_log_mel",
    "log_mel",
    "mel_envelope",
    "mel_filterbank",
    "mel_for_frames",
    "mel_frames_per_video_frame",
    "mel_frequencies",
    "mfcc",
    "video_frames_for",
]
