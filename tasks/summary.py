"""A flow run's summary artifact: counts, then every item that failed (never fails the run itself)."""

from __future__ import annotations

from prefect.artifacts import create_markdown_artifact


def _cell(value) -> str:
    return " ".join(str(value).split()).replace("|", "\\|")[:300] or "-"


def summary_markdown(title: str, counts: dict, failures: list[dict]) -> str:
    """Markdown: a one-row table of `counts`, then a table of `failures` (dicts with the same keys)."""
    lines = [
        f"# {title}",
        "",
        "| " + " | ".join(counts) + " |",
        "|" + "---|" * len(counts),
        "| " + " | ".join(_cell(v) for v in counts.values()) + " |",
        "",
        f"## Failures ({len(failures)})",
        "",
    ]
    if failures:
        keys = list(failures[0])
        lines += ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
        lines += ["| " + " | ".join(_cell(f.get(k, "")) for k in keys) + " |" for f in failures]
    else:
        lines.append("none")
    return "\n".join(lines) + "\n"


def publish_summary(key: str, title: str, counts: dict, failures: list[dict]) -> str:
    """Create the markdown summary artifact `key` (lowercase, dashes) of this flow run; returns its text."""
    text = summary_markdown(title, counts, failures)
    create_markdown_artifact(text, key=key, description=title)
    return text
