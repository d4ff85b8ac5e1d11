"""imagineid.media: round trips through real ffmpeg, resampling, process hygiene, typed errors, atomic writes."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from imagineid.errors import ImagineIDError
from imagineid.media import (
    MediaError,
    NoAudioStreamError,
    NoVideoStreamError,
    TruncatedMediaError,
    UnreadableMediaError,
    count_frames,
    iter_frames,
    load_audio,
    probe,
    read_frames,
    write_audio,
    write_video,
)
from imagineid.media.probe import parse_ffmpeg_info

FPS, N_FRAMES, SIDE, SR = 25, 50, 64, 16000


def smooth_frames(n: int = N_FRAMES, side: int = SIDE) -> np.ndarray:
    """(n, side, side, 3) uint8: colour gradients plus a soft blob moving left to right."""
    y, x = np.mgrid[0:side, 0:side].astype(np.float32) / side
    out = np.empty((n, side, side, 3), np.uint8)
    for t in range(n):
        cx = 0.2 + 0.6 * t / max(n - 1, 1)
        blob = np.exp(-((x - cx) ** 2 + (y - 0.5) ** 2) / 0.02)
        out[t, ..., 0] = 40 + 150 * x + 60 * blob
        out[t, ..., 1] = 40 + 150 * y
        out[t, ..., 2] = 200 - 120 * blob
    return out


def sine(seconds: float, hz: float = 440.0, sr: int = SR) -> np.ndarray:
    return (0.5 * np.sin(2 * np.pi * hz * np.arange(round(seconds * sr)) / sr)).astype(np.float32)


def ffmpeg_children() -> list[int]:
    """Pids of this process's child processes (zombies included) whose name starts with ffmpeg."""
    kids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # process ended while we looked
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        if ppid == os.getpid() and name.startswith("ffmpeg"):
            kids.append(int(entry.name))
    return kids


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One clip with audio, one without, one wav, shared by the read-only tests."""
    d = tmp_path_factory.mktemp("media")
    assert write_video(d / "clip.mp4", (f for f in smooth_frames()), fps=FPS, audio=sine(2.0)) == N_FRAMES
    write_video(d / "silent.mp4", smooth_frames(), fps=FPS)
    write_audio(d / "tone.wav", sine(1.0))
    return d


# --- round trip -------------------------------------------------------------------------------------


def test_probe_reports_what_was_written(media_dir: Path) -> None:
    info = probe(media_dir / "clip.mp4")
    assert (info.fps, info.width, info.height) == (25.0, SIDE, SIDE)
    assert info.n_frames == N_FRAMES and info.n_frames_exact
    assert count_frames(media_dir / "clip.mp4") == N_FRAMES
    assert info.has_video and info.has_audio
    assert (info.video_codec, info.audio_codec) == ("h264", "aac")
    assert (info.audio_rate, info.audio_channels) == (SR, 1)
    assert info.duration_s == pytest.approx(N_FRAMES / FPS, abs=0.05)


def test_frames_round_trip(media_dir: Path) -> None:
    back = read_frames(media_dir / "clip.mp4")
    assert back.shape == (N_FRAMES, SIDE, SIDE, 3) and back.dtype == np.uint8
    mae = np.abs(back.astype(np.int16) - smooth_frames().astype(np.int16)).mean()
    assert mae < 3.0, mae


def test_audio_round_trip(media_dir: Path) -> None:
    wave = load_audio(media_dir / "clip.mp4")
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert abs(len(wave) / SR - N_FRAMES / FPS) < 0.1
    assert np.abs(wave).max() <= 1.0
    spectrum = np.abs(np.fft.rfft(wave))
    assert abs(np.fft.rfftfreq(len(wave), 1 / SR)[spectrum.argmax()] - 440) < 5
    # correlation with the source after finding the codec delay
    ref = sine(2.0)
    core = ref[2000:30000]
    lags = range(-1024, 1025)
    corr = max(np.corrcoef(core, wave[2000 + lag : 30000 + lag])[0, 1] for lag in lags)
    assert corr > 0.95


def test_audio_is_cut_or_padded_to_the_video(tmp_path: Path) -> None:
    for name, audio in [("long.mp4", sine(3.0)), ("short.mp4", sine(0.5))]:
        write_video(tmp_path / name, smooth_frames(), fps=FPS, audio=audio)
        assert count_frames(tmp_path / name) == N_FRAMES
        assert abs(len(load_audio(tmp_path / name)) / SR - N_FRAMES / FPS) < 0.1


def test_load_audio_resamples_wav(media_dir: Path) -> None:
    assert len(load_audio(media_dir / "tone.wav", sample_rate=8000)) == 8000
    assert len(load_audio(media_dir / "tone.wav")) == SR


# --- streaming decode -------------------------------------------------------------------------------


def test_iter_frames_resamples_fps_and_size(media_dir: Path) -> None:
    clip = media_dir / "clip.mp4"
    assert len(list(iter_frames(clip, fps=12.5))) == N_FRAMES // 2
    assert {f.shape for f in iter_frames(clip, size=32)} == {(32, 32, 3)}
    small = read_frames(clip, fps=12.5, size=(48, 32))
    assert small.shape == (N_FRAMES // 2, 32, 48, 3)
    assert read_frames(clip, pix_fmt="gray").shape == (N_FRAMES, SIDE, SIDE)


def test_iter_frames_chunking_does_not_change_frames(media_dir: Path) -> None:
    clip = media_dir / "clip.mp4"
    one = np.stack(list(iter_frames(clip, chunk=1)))
    seven = np.stack(list(iter_frames(clip, chunk=7)))
    assert np.array_equal(one, seven)
    seven[0, 0, 0] = 0  # yielded frames are writable


def test_early_close_leaves_no_ffmpeg_behind(media_dir: Path) -> None:
    frames = iter_frames(media_dir / "clip.mp4", chunk=1)
    next(frames)
    running = ffmpeg_children()
    assert running, "ffmpeg should be running while frames are pending"
    frames.close()
    assert not any(pid in ffmpeg_children() for pid in running)  # killed and reaped: not even a zombie


def test_unstarted_generator_starts_no_ffmpeg(media_dir: Path) -> None:
    frames = iter_frames(media_dir / "clip.mp4")
    assert not ffmpeg_children()
    del frames


# --- typed errors -----------------------------------------------------------------------------------


@pytest.fixture
def truncated(media_dir: Path, tmp_path: Path) -> Path:
    data = (media_dir / "clip.mp4").read_bytes()
    path = tmp_path / "half.mp4"
    path.write_bytes(data[: len(data) // 2])
    return path


def test_truncated_mp4(truncated: Path) -> None:
    for call in (probe, load_audio, read_frames, count_frames):
        with pytest.raises(TruncatedMediaError, match="truncated or corrupt"):
            call(truncated)


def test_mp4_without_index_is_truncated(tmp_path: Path) -> None:
    path = tmp_path / "no_moov.mp4"
    path.write_bytes(b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + b"\x00\x00\x00\x10mdat" + bytes(8))
    with pytest.raises(TruncatedMediaError, match="moov"):
        probe(path)


def test_corrupt_bytes_midway_are_truncated(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    path = tmp_path / "noisy.mp4"
    write_video(path, rng.integers(0, 256, (N_FRAMES, SIDE, SIDE, 3), dtype=np.uint8), fps=FPS)
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 2000] = rng.integers(0, 256, 2000, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    assert probe(path).n_frames == N_FRAMES  # the index is intact ...
    with pytest.raises(TruncatedMediaError, match="truncated or corrupt"):
        list(iter_frames(path))  # ... but decoding breaks partway


def test_text_file_named_mp4_is_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "notes.mp4"
    path.write_text("these are not the frames you are looking for\n")
    for call in (probe, load_audio, iter_frames):
        with pytest.raises(UnreadableMediaError, match="not a readable media file"):
            call(path)


def test_missing_empty_and_folder_are_unreadable(tmp_path: Path) -> None:
    (tmp_path / "empty.mp4").touch()
    cases = {tmp_path / "nope.mp4": "file not found", tmp_path / "empty.mp4": "empty", tmp_path: "directory"}
    for path, reason in cases.items():
        with pytest.raises(UnreadableMediaError, match=reason) as info:
            probe(path)
        assert str(path) in str(info.value)


def test_missing_streams(media_dir: Path) -> None:
    with pytest.raises(NoAudioStreamError, match="has no audio stream"):
        load_audio(media_dir / "silent.mp4")
    with pytest.raises(NoVideoStreamError, match="has no video stream"):
        iter_frames(media_dir / "tone.wav")
    with pytest.raises(NoVideoStreamError, match="has no video stream"):
        count_frames(media_dir / "tone.wav")
    assert not probe(media_dir / "silent.mp4").has_audio


def test_error_classes_are_distinct(media_dir: Path, truncated: Path, tmp_path: Path) -> None:
    (tmp_path / "notes.mp4").write_text("text")
    raised = []
    for call, path in [
        (probe, truncated),
        (probe, tmp_path / "notes.mp4"),
        (iter_frames, media_dir / "tone.wav"),
        (load_audio, media_dir / "silent.mp4"),
    ]:
        with pytest.raises(MediaError) as info:
            call(path)
        raised.append(info.value)
    assert len({type(e) for e in raised}) == 4
    assert len({e.kind for e in raised}) == 4
    assert len({str(e).split(": ", 1)[1] for e in raised}) == 4
    for err in raised:
        assert isinstance(err, ImagineIDError)
        assert "\n" not in str(err) and err.path in str(err)


# --- writing ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("with_audio", [False, True])
def test_failing_generator_leaves_nothing(tmp_path: Path, with_audio: bool) -> None:
    def frames():
        yield from smooth_frames(10)
        raise RuntimeError("camera unplugged")

    with pytest.raises(RuntimeError, match="camera unplugged"):
        write_video(tmp_path / "out.mp4", frames(), audio=sine(1.0) if with_audio else None)
    assert list(tmp_path.iterdir()) == []
    assert not ffmpeg_children()


def test_write_video_rejects_bad_frames(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="odd"):
        write_video(tmp_path / "odd.mp4", np.zeros((3, 63, 64, 3), np.uint8))
    with pytest.raises(ValueError, match="differs from frame 0"):
        write_video(tmp_path / "mixed.mp4", [np.zeros((64, 64, 3), np.uint8), np.zeros((32, 32, 3), np.uint8)])
    with pytest.raises(ValueError, match="uint8"):
        write_video(tmp_path / "float.mp4", np.zeros((3, 64, 64, 3), np.float32))
    with pytest.raises(ValueError, match="no frames"):
        write_video(tmp_path / "empty.mp4", [])
    with pytest.raises(ValueError, match="float mono"):
        write_video(tmp_path / "int_audio.mp4", smooth_frames(4), audio=np.zeros(100, np.int16))
    assert list(tmp_path.iterdir()) == []


def test_ffmpeg_failure_is_a_media_error_and_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("imagineid.media.encode.ffmpeg_exe", lambda: shutil.which("false"))
    with pytest.raises(MediaError, match="H.264 encoding failed"):
        write_video(tmp_path / "out.mp4", smooth_frames(8))
    assert list(tmp_path.iterdir()) == []


def test_write_video_replaces_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "out.mp4"
    path.write_text("old")
    write_video(path, smooth_frames(6), fps=FPS)
    assert count_frames(path) == 6
    assert list(tmp_path.iterdir()) == [path]


# --- parsing ffmpeg's description -------------------------------------------------------------------

PHONE_STDERR = """Input #0, mov,mp4,m4a,3gp,3g2,mj2, from 'phone.mov':
  Duration: 00:01:02.50, start: 0.000000, bitrate: 9000 kb/s
  Stream #0:0[0x1](eng): Audio: aac (LC) (mp4a / 0x6134706D), 48000 Hz, 5.1(side), fltp, 256 kb/s (default)
  Stream #0:1[0x2](und): Video: mjpeg (Baseline), yuvj420p(pc), 300x300, 90k tbr, 90k tbn (attached pic)
  Stream #0:2[0x3](und): Video: hevc (Main) (hvc1 / 0x31637668), yuv420p(tv), 1920x1080, 8000 kb/s, 29.97 fps, 29.97 tbr, 600 tbn (default)
    Side data:
      displaymatrix: rotation of -90.00 degrees
"""


def test_parse_ffmpeg_info_handles_real_world_lines() -> None:
    info = parse_ffmpeg_info("phone.mov", PHONE_STDERR)
    assert info.video_index == 2 and info.video_codec == "hevc"  # cover art skipped
    assert (info.width, info.height) == (1080, 1920)  # rotated
    assert info.fps == pytest.approx(29.97)
    assert info.n_frames == round(62.5 * 29.97) and not info.n_frames_exact
    assert (info.audio_index, info.audio_rate, info.audio_channels) == (0, 48000, 6)
    no_fps = parse_ffmpeg_info("x.mkv", "  Duration: N/A\n  Stream #0:0: Video: vp9, yuv420p, 64x48, 1k tbr\n")
    assert (no_fps.fps, no_fps.duration_s, no_fps.n_frames, no_fps.has_audio) == (1000.0, None, None, False)


@pytest.mark.parametrize(
    "listing",
    [
        "ffconcat version 1.0\nfile secret.wav\n",  # a concat list: ffmpeg would play secret.wav
        "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1.0,\nsecret.wav\n#EXT-X-ENDLIST\n",  # an HLS playlist
    ],
)
def test_a_list_of_other_files_named_mp4_is_refused_not_followed(tmp_path: Path, listing: str) -> None:
    from imagineid.media import load_audio, write_audio
    from imagineid.media.errors import UnreadableMediaError

    write_audio(tmp_path / "secret.wav", (0.3 * np.sin(np.arange(16000) / 5)).astype(np.float32))
    disguised = tmp_path / "clip.mp4"
    disguised.write_text(listing)
    with pytest.raises(UnreadableMediaError):
        load_audio(disguised)
    assert len(load_audio(tmp_path / "secret.wav")) == 16000  # the file itself stays readable


def test_every_untrusted_ffmpeg_input_is_restricted_to_files_and_media_containers() -> None:
    from imagineid.media.ffmpeg_bin import SAFE_DEMUXERS, untrusted_input_args

    args = untrusted_input_args()
    assert args[args.index("-protocol_whitelist") + 1] == "file"
    allowed = set(args[args.index("-format_whitelist") + 1].split(","))
    assert allowed == set(SAFE_DEMUXERS.split(",")) and not allowed & {"hls", "concat", "image2", "tee", "http"}


def test_a_decode_that_gives_nothing_is_stopped_by_wall_clock_not_left_hanging(tmp_path: Path) -> None:
    """A named pipe nobody writes stands in for a hung mount: ffmpeg blocks in open() using no CPU, so its
    CPU-time limit never fires. The stall watchdog stops it and the error names the file."""
    import time

    import ffmpeg

    from imagineid.media.decode import _frames
    from imagineid.media.errors import StalledMediaError
    from imagineid.media.ffmpeg_bin import QUIET, file_url

    fifo = tmp_path / "hung.rgb"
    os.mkfifo(fifo)
    stream = ffmpeg.output(
        ffmpeg.input(file_url(fifo), format="rawvideo", pix_fmt="rgb24", s="8x8"),
        "pipe:",
        format="rawvideo",
        pix_fmt="rgb24",
    ).global_args(*QUIET)
    start = time.monotonic()
    with pytest.raises(StalledMediaError, match="hung.rgb.*no output for 1 s"):
        list(_frames(str(fifo), stream, (8, 8, 3), chunk=1, stall_s=1.0))
    assert time.monotonic() - start < 10 and not ffmpeg_children()
    assert StalledMediaError.kind == "media_stalled"

    # A slow consumer is not a stall: only time spent waiting for ffmpeg counts.
    frames = smooth_frames(6, 16)
    write_video(tmp_path / "ok.mp4", frames, fps=FPS)
    ok = ffmpeg.output(
        ffmpeg.input(file_url(tmp_path / "ok.mp4")), "pipe:", format="rawvideo", pix_fmt="rgb24"
    ).global_args(*QUIET)
    got = []
    for frame in _frames(str(tmp_path / "ok.mp4"), ok, (16, 16, 3), chunk=1, stall_s=0.5):
        got.append(frame)
        time.sleep(0.7)
    assert len(got) == 6
