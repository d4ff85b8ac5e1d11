"""The self-contained HTML evaluation report: every image is an inline PNG, so the single file can be
mailed, archived or opened offline and always renders complete.

Sections: summary table (skipped metrics with their reason), metric distributions, mouth opening vs audio
traces, identity retrieval examples and the emotion-embedding map (when the run the videos came from is
still there: GEN/generate.json names it), frame strips of sample videos, and the per-video table.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from imagineid.audio.features import frame_rms  # noqa: E402
from imagineid.evaluation.metric_info import direction, meaning  # noqa: E402
from imagineid.evaluation.video_metrics import read_audio  # noqa: E402

DISTRIBUTIONS = (
    "face_detection_rate",
    "identity_distance_to_frame1",
    "lipsync_audio_best_r",
    "lipsync_mesh_best_r",
    "background_psnr_db",
    "landmark_jitter",
)
TABLE_COLUMNS = (
    "key",
    "frames",
    "face_detection_rate",
    "identity_distance_to_frame1",
    "lipsync_audio_r",
    "lipsync_audio_best_r",
    "lipsync_audio_best_lag",
    "lipsync_mesh_r",
    "background_psnr_db",
    "landmark_jitter",
    "predicted_gender",
    "predicted_emotion",
    "truth_landmark_distance",
)
STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}img{max-width:100%}
.strip img{image-rendering:pixelated}.muted{color:#777}"""


def png(fig_or_image) -> str:
    """A matplotlib figure or an (H, W, 3) uint8 image → a data: URI."""
    buf = io.BytesIO()
    if isinstance(fig_or_image, np.ndarray):
        plt.imsave(buf, fig_or_image, format="png")
    else:
        fig_or_image.savefig(buf, format="png", dpi=90, bbox_inches="tight")
        plt.close(fig_or_image)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _fmt(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}"
    return html.escape(str(value))


def _table(rows: list[dict], columns: tuple[str, ...]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(r.get(c))}</td>" for c in columns) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def distributions_plot(videos: list[dict]) -> str:
    fig, axes = plt.subplots(2, 3, figsize=(12, 6))
    for ax, name in zip(axes.ravel(), DISTRIBUTIONS):
        values = [v[name] for v in videos if v.get(name) is not None]
        ax.hist(values, bins=15, color="#4477aa")
        ax.set_title(name, fontsize=10)
    fig.tight_layout()
    return png(fig)


def traces_plot(videos: list[dict], gen: Path, n: int = 3) -> str:
    fig, axes = plt.subplots(n, 1, figsize=(12, 2.3 * n), squeeze=False)
    for ax, video in zip(axes[:, 0], videos[:n]):
        opening = np.array([np.nan if x is None else x for x in video["mouth_opening"]], np.float64)
        audio = read_audio(gen / video["video"])

        def norm(x: np.ndarray) -> np.ndarray:
            if np.isfinite(x).sum() < 2:  # no face found: nothing to draw
                return np.full_like(x, np.nan)
            return (x - np.nanmean(x)) / (np.nanstd(x) + 1e-9)

        ax.plot(norm(opening), label="mouth opening (generated)", color="#cc3311")
        if audio is not None:
            ax.plot(norm(frame_rms(audio, len(opening))), label="audio envelope", color="#4477aa", alpha=0.7)
        ax.set_title(
            f"{video['key']}  (r = {_fmt(video.get('lipsync_audio_r'))}, "
            f"best lag {video.get('lipsync_audio_best_lag')})",
            fontsize=10,
        )
        ax.set_xlabel("frame")
        ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    return png(fig)


def listener_sections(gen: Path, data: Path, videos: list[dict]) -> str:
    """Identity retrieval examples and the emotion-embedding map; needs the run named in GEN/generate.json."""
    info = gen / "generate.json"
    run = Path(json.loads(info.read_text())["run"]) if info.exists() else None
    if run is None or not (run / "identity").exists() or not (data / "clips").exists():
        return "<p class=muted>Identity retrieval and emotion map skipped: the run or the dataset is not available.</p>"
    from imagineid.data.store import Store
    from imagineid.listening import Listener, dataset_embeddings
    from imagineid.media import iter_frames, load_audio
    from imagineid.training.metrics import pca_2d

    listener = Listener.load(run)
    rows, identity, emotion = dataset_embeddings(listener, data)
    store = Store(data)
    parts = [
        "<h2>Identity retrieval</h2><p>Generated frame 1 (left) and the dataset clips whose identity "
        "embedding is nearest to the audio's (the same voice traits should give the same gender).</p>"
    ]
    audios = list(dict.fromkeys(v["audio"] for v in videos))[:4]
    heard = {a: listener.hear(listener.prepare(load_audio(a))) for a in audios}
    for audio in audios:
        video = next(v for v in videos if v["audio"] == audio)
        first = next(iter_frames(gen / video["video"]))
        near = np.argsort(-(identity @ heard[audio]["embedding"]))[:3]
        cells = [f"<td><img src='{png(first)}' width=96><br>generated ({_fmt(video['predicted_gender'])})</td>"]
        for i in near:
            crop = next(iter_frames(store.crops(rows[i]["clip_id"]), size=96))
            cells.append(
                f"<td><img src='{png(crop)}' width=96><br>{_fmt(rows[i]['speaker_id'])} "
                f"({_fmt(rows[i]['gender'])})</td>"
            )
        parts.append(f"<p>{html.escape(Path(audio).name)}</p><table><tr>{''.join(cells)}</tr></table>")
    if emotion is not None and len(emotion) >= 3:
        project = pca_2d(emotion)
        xy = project(emotion)  # (N, 2)
        fig, ax = plt.subplots(figsize=(6, 5))
        labels = [r["emotion"] or "unknown" for r in rows]
        for label in sorted(set(labels)):
            k = [i for i, lab in enumerate(labels) if lab == label]
            ax.scatter(xy[k, 0], xy[k, 1], label=label, s=18)
        gen_xy = project(np.stack([heard[a]["emotion_embedding"] for a in audios])) if audios else None
        if gen_xy is not None:
            ax.scatter(gen_xy[:, 0], gen_xy[:, 1], marker="*", s=120, color="black", label="evaluated audio")
        ax.legend(fontsize=8)
        ax.set_title("emotion embeddings (PCA): dataset clips by label")
        parts.append(f"<h2>Emotion-embedding map</h2><img src='{png(fig)}'>")
    return "".join(parts)


def write_report(path: Path, metrics: dict, samples: dict[str, list[np.ndarray]], gen: Path, data: Path) -> Path:
    summary_rows = [
        {"metric": k, "value": v, "direction": direction(k), "meaning": meaning(k)}
        for k, v in metrics["summary"].items()
    ]
    summary_rows += [
        {"metric": k, "value": reason, "direction": direction(k), "meaning": meaning(k)}
        for k, reason in metrics["skipped"].items()
    ]
    videos = metrics["videos"]
    strips = "".join(
        f"<p>{html.escape(key)}</p><div class=strip>"
        + "".join(f"<img src='{png(f)}' width=128>" for f in frames)
        + "</div>"
        for key, frames in list(samples.items())[:8]
    )
    try:
        listened = listener_sections(gen, data, videos)
    except Exception as err:  # noqa: BLE001 - the rest of the report is still worth having
        listened = f"<p class=muted>Identity retrieval and emotion map failed: {html.escape(str(err))}</p>"
    title = f"imagineid evaluation — {html.escape(gen.name)}"
    where = f"{html.escape(str(gen))} · {len(videos)} videos · metrics.json holds every number"
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{title}</title>
<style>{STYLE}</style></head><body>
<h1>imagineid evaluation</h1><p class=muted>{where}</p>
<h2>Summary</h2>{_table(summary_rows, ("metric", "value", "direction", "meaning"))}
<h2>Metric distributions</h2><img src="{distributions_plot(videos)}">
<h2>Mouth opening vs audio</h2><img src="{traces_plot(videos, gen)}">
{listened}
<h2>Sample frames</h2>{strips}
<h2>Per video</h2>{_table(videos, TABLE_COLUMNS)}
</body></html>"""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)
    return path
