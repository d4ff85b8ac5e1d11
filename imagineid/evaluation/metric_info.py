"""What each reported metric means and which way is better: one table for the report, the comparison
of methods and the CLI, so a number is never shown without its reading."""

from __future__ import annotations

HIGHER, LOWER, NEITHER = "higher is better", "lower is better", ""
LANDMARK_BACKENDS = ("dlib", "fan")  # M-LMD / F-LMD landmarks (`--lmd-landmarks`)

METRICS: dict[str, tuple[str, str]] = {
    "face_detection_rate": ("share of frames where dlib finds a face", HIGHER),
    "identity_distance_to_frame1": ("dlib face-descriptor distance of each frame to frame 1 (identity drift)", LOWER),
    "lipsync_audio_r": ("correlation of mouth opening with the audio envelope at lag 0", HIGHER),
    "lipsync_audio_best_r": ("that correlation at the best lag within ±5 frames", HIGHER),
    "lipsync_mesh_r": ("correlation of mouth opening with the driving mesh's (this project's videos)", HIGHER),
    "lipsync_mesh_best_r": ("that correlation at the best lag", HIGHER),
    "background_psnr_db": ("PSNR of the background against frame 1 outside the face (stability)", HIGHER),
    "landmark_jitter": ("mean |second temporal difference| of the landmarks, / face width (steadiness)", LOWER),
    "truth_landmark_distance": ("landmark distance to the synthetic ground-truth face after alignment", LOWER),
    "gender_agrees": ("the voice's predicted gender matches the label", HIGHER),
    "emotion_agrees": ("the predicted emotion matches the label", HIGHER),
    "seed_diversity": ("mean descriptor distance between the frame-1 faces of one audio's seeds", HIGHER),
    "voice_face_top1": ("imagined face geometry retrieves its speaker's true face (top-1)", HIGHER),
    "voice_face_chance": ("top-1 by chance: 1 / speakers", NEITHER),
    "voice_face_shuffled_top1": ("top-1 with voices shuffled: the control, near chance", NEITHER),
    "voice_face_speakers": ("held-out speakers in the voice-to-face match", NEITHER),
    "voice_face_videos": ("videos in the voice-to-face match", NEITHER),
    "voice_face_shape_r": ("per shape coefficient, correlation of imagined with true", HIGHER),
    "lse_c": ("SyncNet lip-sync confidence (LSE-C)", HIGHER),
    "lse_d": ("SyncNet lip-sync distance at the best offset (LSE-D)", LOWER),
    "csim": ("ArcFace cosine similarity to the driving clip's face (CSIM)", HIGHER),
    "csim_dlib": ("dlib-descriptor cosine similarity to the driving clip's face (not published CSIM)", HIGHER),
    "m_lmd": ("mouth landmark distance to the driving clip (M-LMD)", LOWER),
    "f_lmd": ("face landmark distance to the driving clip (F-LMD)", LOWER),
    "fid": ("Fréchet Inception distance to the driving clips' frames", LOWER),
    "fid_samples_generated": ("frames in FID's generated set", NEITHER),
    "fid_samples_reference": ("frames in FID's reference set", NEITHER),
    "fid_resolution": ("FID's input size in pixels", NEITHER),
    "fvd": ("Fréchet video distance (I3D, 16-frame clips) to the driving clips", LOWER),
    "fvd_clips_generated": ("16-frame clips in FVD's generated set", NEITHER),
    "fvd_clips_reference": ("16-frame clips in FVD's reference set", NEITHER),
    "fvd_clip_frames": ("frames per FVD clip", NEITHER),
    "fvd_resolution": ("FVD's input size in pixels", NEITHER),
    "videos": ("videos measured", NEITHER),
    "failed_in_index": ("videos the index lists as failed", NEITHER),
    "unreadable": ("videos that could not be decoded (listed under errors in metrics.json)", NEITHER),
}


def meaning(name: str) -> str:
    return METRICS.get(name, ("", NEITHER))[0]


def direction(name: str) -> str:
    return METRICS.get(name, ("", NEITHER))[1]
