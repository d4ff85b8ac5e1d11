"""Videos that another method made (SadTalker, Wav2Lip, Hallo, …): a folder of mp4s with their audio and
no index.parquet, measured with the same code as this project's own videos.

Each video's driving clip (the ground truth for CSIM, landmark distances and FID, and for synthetic
corpora the labels) is the file under `sources` whose name stem matches the video's; failing that, the
longest source stem the video's stem contains (SadTalker writes `<image>##<audio>.mp4`). A video with
no driving clip is still measured, without the metrics that need one: it is never compared with itself.
"""

from __future__ import annotations

from pathlib import Path

from imagineid.errors import ImagineIDError
from imagineid.media import probe

MEDIA = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".wav", ".flac", ".mp3", ".m4a")


def _sources_by_stem(sources: Path | None) -> dict[str, Path]:
    if sources is None:
        return {}
    if not sources.is_dir():
        raise ImagineIDError(f"--sources {sources} is not a folder")
    found: dict[str, Path] = {}
    for path in sorted(sources.rglob("*")):
        if path.suffix.lower() in MEDIA and not path.name.startswith("."):
            found.setdefault(path.stem, path)
    return found


def driving_clip(video: Path, by_stem: dict[str, Path]) -> Path | None:
    if video.stem in by_stem:
        return by_stem[video.stem]
    inside = [stem for stem in by_stem if stem and stem in video.stem]
    return by_stem[max(inside, key=len)] if inside else None


def folder_rows(folder: Path, sources: Path | None = None) -> list[dict]:
    """Index rows (as `index.parquet` holds them) for every mp4 under `folder`."""
    if not folder.is_dir():
        raise ImagineIDError(f"{folder} does not exist: give a folder of `imagineid generate` or of mp4 videos")
    videos = sorted(p for p in folder.rglob("*.mp4") if not p.name.startswith("."))
    if not videos:
        raise ImagineIDError(
            f"{folder} has neither index.parquet (`imagineid generate … --out {folder}`) nor mp4 videos to evaluate"
        )
    by_stem = _sources_by_stem(sources)
    rows = []
    for video in videos:
        source = driving_clip(video, by_stem)
        try:
            frames = probe(video).n_frames or 0
        except (ImagineIDError, OSError):
            frames = 0  # measured (and its error recorded) like any other video
        rows.append(
            {
                "key": str(video.relative_to(folder).with_suffix("")),
                "audio": str(source) if source else None,
                "seed": 0,
                "video": str(video.relative_to(folder)),
                "frames": frames,
                "status": "ok",
                "predicted_gender": None,
                "predicted_emotion": None,
                "mesh_mouth_opening": None,
            }
        )
    return rows
