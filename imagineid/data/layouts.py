"""Which videos a `preprocess SRC ...` call means, and what their folder layout says about them.

    from imagineid.data.layouts import discover
    clips = discover([Path("~/data/MEAD"), Path("talk.mp4")])     # dataset='auto'
    clips[0]  # SourceClip(path=.../M003/video/front/happy/level_2/001.mp4, dataset='mead',
              #            speaker_id='M003', labels={'gender': 'male', 'emotion': 'happy', ...}, ...)

Inputs may be files or folders. Folders are walked recursively for video files (`VIDEO_EXTENSIONS`,
any case; names starting with '.' are skipped); a file named explicitly is kept whatever its suffix,
so a wrong input (say `notes.txt`) is reported by the stage that fails on it instead of vanishing.
The result is sorted by path and free of duplicates. Paths are absolute but symlinks are kept as
named (a layout is read from the path the user sees).

Layouts (the dataset cards in `datasets/*.yaml` say where to get each and what the labels mean):

- mead       `<root>/<M003|W009>/video/<view>/<emotion>/level_<n>/<nnn>.mp4` → speaker, gender (M/W),
             emotion (one of MEAD's 8), intensity = n/3 (and `level` = n), view.
- voxceleb2  `[<root>/(dev|test)/mp4/]<id00012>/<youtube id>/<00001>.mp4` → speaker, split dev/test;
             gender (and split) from VoxCeleb2's `vox2_meta.csv` when it lies in the dataset folders.
- hdtf       `<Source>_<Video>[_<nnn>].mp4`, Source in RD/WDA/WRA → speaker `<Source>_<Person>` (the video
             name without its trailing index: WDA_AmyKlobuchar1_000 → WDA_AmyKlobuchar; Radio<n> kept
             whole), labels source and video. With --dataset hdtf also the README's `<Video>_<n>.mp4`.
- synthetic  `imagineid synth` output (`metadata.parquet` beside `videos/`) → speaker, gender,
             age_group, emotion, intensity from the metadata; split held out by speaker (`_synthetic_splits`).
- generic    anything else: speaker = the parent folder inside the folder given, else the file stem.

`dataset='auto'` tries them per file in the order synthetic, mead, voxceleb2, hdtf, generic. An explicit
dataset reads its layout; files that do not follow it fall back to generic with a logged warning, and if
none of the video files follows it that is a `ValueError` (most likely the wrong --dataset).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from imagineid.errors import ImagineIDError

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v")
DATASETS = ("auto", "generic", "hdtf", "mead", "voxceleb2", "synthetic")
MEAD_EMOTIONS = ("angry", "contempt", "disgusted", "fear", "happy", "neutral", "sad", "surprised")
MEAD_LEVELS = 3  # level_1 .. level_3; intensity = level / 3
HDTF_SOURCES = ("RD", "WDA", "WRA")  # radio addresses, Democratic / Republican addresses (White House)
SYNTHETIC_METADATA = "metadata.parquet"  # imagineid.synth.corpus.METADATA (not imported: keeps this module light)
SYNTHETIC_TEST_FRACTION = 0.25  # share of synthetic speakers held out as split 'test'

_MEAD_SPEAKER = re.compile(r"^([MW])(\d{3})$")
_MEAD_LEVEL = re.compile(r"^level_(\d+)$")
_VOX_SPEAKER = re.compile(r"^id\d+$")
_VOX_CLIP = re.compile(r"^\d+$")
_HDTF_NAME = re.compile(r"^(RD|WDA|WRA)_(.+?)(?:_(\d+))?$")
_HDTF_BARE_NAME = re.compile(r"^([A-Za-z][A-Za-z0-9-]*?)_(\d+)$")


class MissingSourceError(ImagineIDError):
    """A path given on the command line does not exist."""

    kind = "missing_source"


@dataclass(frozen=True)
class SourceClip:
    """One source video and what its layout says about it."""

    path: Path  # absolute, symlinks not resolved
    dataset: str  # 'mead' | 'voxceleb2' | 'hdtf' | 'synthetic' | 'generic'
    speaker_id: str | None  # as the dataset spells it (M003, id00012, WDA_BarackObama, s1-00)
    labels: dict[str, str | float] = field(default_factory=dict)  # gender, age_group, emotion, intensity, ...
    split: str | None = None  # 'train' | 'test' (synthetic), 'dev' | 'test' (VoxCeleb2), None: unknown
    name: str = ""  # stable human-readable name, e.g. 'M003_front_happy_level_2_001' (not a unique key)


# --------------------------------------------------------------------------------------------------
# Finding files
# --------------------------------------------------------------------------------------------------


def is_video_name(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_EXTENSIONS


def _walk_videos(folder: Path) -> list[Path]:
    found, visited = [], set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):  # datasets are often symlinked
        real = os.path.realpath(dirpath)
        if real in visited:  # a symlink cycle, or a folder reached twice
            dirnames[:] = []
            continue
        visited.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found += [Path(dirpath) / f for f in filenames if not f.startswith(".") and is_video_name(Path(f))]
    return found


def _candidates(paths: Sequence[Path]) -> list[tuple[Path, Path | None]]:
    """(file, folder it was found in or None when named explicitly), absolute, deduplicated, sorted."""
    absolute = [Path(os.path.abspath(Path(p).expanduser())) for p in paths]
    missing = [str(p) for p in absolute if not p.exists()]
    if missing:
        raise MissingSourceError(f"no such file or folder: {', '.join(missing)}")
    seen: dict[str, tuple[Path, Path | None]] = {}
    for given in absolute:
        if given.is_dir():
            for f in _walk_videos(given):
                seen.setdefault(os.path.realpath(f), (f, given))
        else:
            seen[os.path.realpath(given)] = (given, None)  # explicit beats found-in-folder
    return sorted(seen.values(), key=lambda item: str(item[0]))


# --------------------------------------------------------------------------------------------------
# Layout readers: (file, folder given or None) -> SourceClip, or None when the path does not fit
# --------------------------------------------------------------------------------------------------


def _read_mead(path: Path, root: Path | None) -> SourceClip | None:
    parts = path.parts
    if len(parts) < 7 or parts[-5] != "video":
        return None
    speaker, view, emotion, level = parts[-6], parts[-4], parts[-3].lower(), parts[-2]
    m_speaker, m_level = _MEAD_SPEAKER.match(speaker), _MEAD_LEVEL.match(level)
    if not (m_speaker and m_level and emotion in MEAD_EMOTIONS):
        return None
    n = int(m_level.group(1))
    labels: dict[str, str | float] = {
        "gender": "male" if m_speaker.group(1) == "M" else "female",
        "emotion": emotion,
        "intensity": n / MEAD_LEVELS,
        "level": float(n),
        "view": view,
    }
    return SourceClip(path, "mead", speaker, labels, None, f"{speaker}_{view}_{emotion}_{level}_{path.stem}")


class _VoxCeleb2Reader:
    """`[...(dev|test)/mp4/]<id>/<youtube id>/<n>.mp4`; gender (and the split) from `vox2_meta.csv` if present.

    VoxCeleb2 publishes `vox2_meta.csv` (VoxCeleb2 ID, VGGFace2 ID, Gender m/f, Set dev/test); put it in
    the dataset root or next to the id folders and it is found (searched up to 4 levels above a clip's
    speaker folder).
    """

    META = "vox2_meta.csv"

    def __init__(self) -> None:
        self._metas: dict[Path, dict[str, tuple[str | None, str | None]]] = {}

    def _meta_in(self, folder: Path) -> dict[str, tuple[str | None, str | None]]:
        if folder not in self._metas:
            self._metas[folder] = _read_vox2_meta(folder / self.META) if (folder / self.META).is_file() else {}
        return self._metas[folder]

    def __call__(self, path: Path, root: Path | None) -> SourceClip | None:
        parts = path.parts
        if len(parts) < 4 or not (_VOX_SPEAKER.match(parts[-3]) and _VOX_CLIP.match(path.stem)):
            return None
        speaker, youtube = parts[-3], parts[-2]
        split = None
        if len(parts) >= 6 and parts[-4] == "mp4" and parts[-5] in ("dev", "test"):
            split = parts[-5]
        elif parts[-4] in ("dev", "test"):
            split = parts[-4]
        labels: dict[str, str | float] = {}
        for folder in path.parents[2:6]:
            gender, meta_split = self._meta_in(folder).get(speaker, (None, None))
            if gender or meta_split:
                labels.update({"gender": gender} if gender else {})
                split = split or meta_split
                break
        return SourceClip(path, "voxceleb2", speaker, labels, split, f"{speaker}_{youtube}_{path.stem}")


def _read_vox2_meta(path: Path) -> dict[str, tuple[str | None, str | None]]:
    """speaker id → (gender 'male'|'female'|None, split 'dev'|'test'|None) from a vox2_meta.csv."""
    rows = [[cell.strip() for cell in line.split(",")] for line in path.read_text(errors="replace").splitlines()]
    rows = [r for r in rows if any(r)]
    if not rows:
        return {}
    header = [h.lower() for h in rows[0]]
    col_id = next((i for i, h in enumerate(header) if "voxceleb2" in h), 0)
    col_gender = next((i for i, h in enumerate(header) if "gender" in h), None)
    col_set = next((i for i, h in enumerate(header) if h == "set"), None)
    genders = {"m": "male", "f": "female", "male": "male", "female": "female"}
    meta = {}
    for r in rows[1:]:
        if len(r) <= col_id:
            continue
        gender = genders.get(r[col_gender].lower()) if col_gender is not None and col_gender < len(r) else None
        split = r[col_set].lower() if col_set is not None and col_set < len(r) else None
        meta[r[col_id]] = (gender, split if split in ("dev", "test") else None)
    return meta


def _hdtf_clip(path: Path, source: str | None, video: str) -> SourceClip:
    # WDA/WRA videos of one person are numbered (AmyKlobuchar0, AmyKlobuchar1): the person is the name
    # without the digits. RD videos (Radio1 .. Radio59) are anonymous and each is taken as its own speaker.
    person = video if video.startswith("Radio") else (video.rstrip("0123456789") or video)
    speaker = f"{source}_{person}" if source else person
    labels: dict[str, str | float] = {"video": video}
    if source:
        labels["source"] = source
    return SourceClip(path, "hdtf", speaker, labels, None, path.stem)


def _read_hdtf(path: Path, root: Path | None) -> SourceClip | None:
    """`<RD|WDA|WRA>_<video>[_<clip>].mp4` (the naming of common processed HDTF releases)."""
    m = _HDTF_NAME.match(path.stem)
    return _hdtf_clip(path, m.group(1), m.group(2)) if m else None


def _read_hdtf_unprefixed(path: Path, root: Path | None) -> SourceClip | None:
    """With --dataset hdtf also `<video>_<clip>.mp4`, the naming the HDTF README itself asks for."""
    clip = _read_hdtf(path, root)
    if clip is not None:
        return clip
    m = _HDTF_BARE_NAME.match(path.stem)
    return _hdtf_clip(path, None, m.group(1)) if m else None


def _read_generic(path: Path, root: Path | None) -> SourceClip:
    if root is None or path.parent == root:
        return SourceClip(path, "generic", path.stem, {}, None, path.stem)
    rel = path.relative_to(root).with_suffix("")
    return SourceClip(path, "generic", path.parent.name, {}, None, "_".join(rel.parts))


def _synthetic_splits(speakers: Sequence[str]) -> dict[str, str]:
    """speaker_id → 'train' | 'test': speakers ranked by sha256(speaker_id); the first quarter is 'test'.

    Deterministic and independent of file order; with 2+ speakers at least one is held out and at
    least one kept, so a 4-speaker corpus always has 1 test speaker. A synthetic corpus is written whole
    by `imagineid synth`, so its speaker set (and hence the split) never changes.
    """
    ranked = sorted(set(speakers), key=lambda s: hashlib.sha256(s.encode()).hexdigest())
    n_test = 0 if len(ranked) < 2 else min(len(ranked) - 1, max(1, round(SYNTHETIC_TEST_FRACTION * len(ranked))))
    return {s: ("test" if i < n_test else "train") for i, s in enumerate(ranked)}


class _SyntheticReader:
    """Reads each corpus's metadata.parquet once (labels columns only) and labels its clips by stem."""

    def __init__(self) -> None:
        self._corpora: dict[Path, dict[str, SourceClip] | None] = {}

    @staticmethod
    def corpus_root(path: Path) -> Path | None:
        for folder in (path.parent, path.parent.parent):
            if (folder / SYNTHETIC_METADATA).is_file():
                return folder
        return None

    def _load(self, root: Path) -> dict[str, SourceClip] | None:
        meta = root / SYNTHETIC_METADATA
        try:
            names = pq.read_schema(meta).names
            wanted = ["clip_id", "speaker_id", "gender", "age_group", "emotion", "emotion_intensity"]
            rows = pq.read_table(meta, columns=[c for c in wanted if c in names]).to_pylist()
        except (OSError, pa.ArrowException) as err:  # unreadable metadata: not a synthetic corpus
            log.warning("ignoring unreadable %s: %s", meta, err)
            return None
        if not rows or "clip_id" not in rows[0]:
            return None
        splits = _synthetic_splits([str(r.get("speaker_id")) for r in rows])
        clips = {}
        for r in rows:
            labels: dict[str, str | float] = {k: str(r[k]) for k in ("gender", "age_group", "emotion") if r.get(k)}
            if r.get("emotion_intensity") is not None:
                labels["intensity"] = float(r["emotion_intensity"])
            speaker = str(r["speaker_id"]) if r.get("speaker_id") is not None else None
            clip_id = str(r["clip_id"])
            clips[clip_id] = SourceClip(
                root / f"videos/{clip_id}.mp4", "synthetic", speaker, labels, splits.get(str(speaker)), clip_id
            )
        return clips

    def __call__(self, path: Path, root: Path | None) -> SourceClip | None:
        corpus = self.corpus_root(path)
        if corpus is None:
            return None
        if corpus not in self._corpora:
            self._corpora[corpus] = self._load(corpus)
        clips = self._corpora[corpus]
        clip = clips.get(path.stem) if clips else None
        return None if clip is None else replace(clip, path=path, labels=dict(clip.labels))


Reader = Callable[[Path, Path | None], SourceClip | None]


def _readers(dataset: str) -> list[Reader]:
    """The layout readers to try, in order; a fresh set per `discover` call (they cache metadata)."""
    if dataset == "generic":
        return []
    if dataset == "hdtf":
        return [_read_hdtf_unprefixed]
    named: dict[str, Reader] = {
        "synthetic": _SyntheticReader(),
        "mead": _read_mead,
        "voxceleb2": _VoxCeleb2Reader(),
        "hdtf": _read_hdtf,
    }
    return list(named.values()) if dataset == "auto" else [named[dataset]]


# --------------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------------


def discover(paths: Sequence[Path | str], dataset: str = "auto") -> list[SourceClip]:
    """Every source video under `paths` with what its layout says; sorted by path, no duplicates.

    Raises `ValueError` for an unknown `dataset` (listing the choices) or when an explicit dataset
    matches none of the video files found, and `MissingSourceError` when a path does not exist.
    """
    dataset = dataset.lower()
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of: {', '.join(DATASETS)}")
    readers = _readers(dataset)
    clips: list[SourceClip] = []
    misfits: list[Path] = []
    for path, root in _candidates([Path(p) for p in paths]):
        clip = next((c for read in readers if (c := read(path, root)) is not None), None)
        if clip is None:
            clip = _read_generic(path, root)
            if dataset not in ("auto", "generic"):
                misfits.append(path)
        clips.append(clip)
    if misfits:
        videos = [c.path for c in clips if is_video_name(c.path)]
        if videos and set(videos) <= set(misfits):
            raise ValueError(
                f"none of the {len(videos)} video files follows the {dataset} layout "
                f"(e.g. {videos[0]}); see datasets/{dataset}.yaml or use --dataset auto"
            )
        log.warning(
            "%d of %d files do not follow the %s layout and are read as generic (e.g. %s)",
            len(misfits),
            len(clips),
            dataset,
            misfits[0],
        )
    return clips
