"""Methods side by side: the summaries of several evaluated folders in one table, each metric with its
meaning and direction, and the best value marked where a direction is known.

    table = compare({"ours": GEN_A, "sadtalker": GEN_B})   # each folder holds metrics.json
    write_comparison(GEN_A / "comparison", table)          # → comparison.json, comparison.html
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

from imagineid.data.parquet_io import write_json_atomic
from imagineid.errors import ImagineIDError
from imagineid.evaluation.metric_info import HIGHER, LOWER, direction, meaning


def _scalar(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def compare(folders: dict[str, Path]) -> dict:
    """{name: folder with metrics.json} → {"methods": [...], "rows": [{metric, meaning, direction, values, best}]}."""
    summaries = {}
    for name, folder in folders.items():
        path = Path(folder) / "metrics.json"
        if not path.exists():
            raise ImagineIDError(f"{folder} has no metrics.json; evaluate it first (`imagineid evaluate {folder}`)")
        summaries[name] = json.loads(path.read_text())["summary"]
    metrics = list(dict.fromkeys(k for s in summaries.values() for k, v in s.items() if not isinstance(v, list)))
    rows = []
    for metric in metrics:
        values = {name: _scalar(s.get(metric)) for name, s in summaries.items()}
        known = {n: v for n, v in values.items() if v is not None}
        way = direction(metric)
        best = None
        if known and way in (HIGHER, LOWER) and len(known) > 1:
            best = (max if way == HIGHER else min)(known, key=known.get)
        rows.append({"metric": metric, "meaning": meaning(metric), "direction": way, "values": values, "best": best})
    return {"methods": list(folders), "folders": {n: str(f) for n, f in folders.items()}, "rows": rows}


def markdown(table: dict) -> str:
    """The table as Markdown (for the CLI and a Prefect artifact); the best value in bold."""
    methods = table["methods"]
    lines = ["| metric | " + " | ".join(methods) + " | better |", "|---" * (len(methods) + 2) + "|"]
    for row in table["rows"]:
        cells = []
        for name in methods:
            v = row["values"][name]
            text = "—" if v is None else f"{v:.4g}"
            cells.append(f"**{text}**" if row["best"] == name else text)
        lines.append(f"| {row['metric']} | " + " | ".join(cells) + f" | {row['direction'].split(' ')[0]} |")
    return "\n".join(lines)


def write_comparison(stem: Path, table: dict) -> tuple[Path, Path]:
    """`stem`.json and a self-contained `stem`.html."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    json_path, html_path = stem.with_suffix(".json"), stem.with_suffix(".html")
    write_json_atomic(json_path, table)
    head = "".join(f"<th>{html.escape(m)}</th>" for m in table["methods"])
    body = []
    for row in table["rows"]:
        cells = []
        for name in table["methods"]:
            v = row["values"][name]
            text = "—" if v is None else f"{v:.4g}"
            cells.append(f"<td><b>{text}</b></td>" if row["best"] == name else f"<td>{text}</td>")
        body.append(
            f"<tr><td>{html.escape(row['metric'])}</td>{''.join(cells)}"
            f"<td>{html.escape(row['direction'])}</td><td class=muted>{html.escape(row['meaning'])}</td></tr>"
        )
    folders = "<br>".join(f"{html.escape(n)}: {html.escape(f)}" for n, f in table["folders"].items())
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>imagineid comparison</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em}}table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #ccc;padding:3px 6px}}th{{background:#f3f3f3}}.muted{{color:#777}}</style></head><body>
<h1>imagineid comparison</h1><p class=muted>{folders}</p>
<table><tr><th>metric</th>{head}<th>direction</th><th>meaning</th></tr>{"".join(body)}</table>
<p class=muted>Bold: the best value where the metric has a direction. Every method was measured by the same code.</p>
</body></html>"""
    tmp = html_path.with_name(f".{html_path.name}.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(html_path)
    return json_path, html_path
