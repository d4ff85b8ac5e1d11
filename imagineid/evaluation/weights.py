"""Strict state-dict loading for the evaluation networks, with the one-line error the project promises.

A file in the wrong layout (another architecture, a truncated export) must stop with its path and the
docs section that says where the right file comes from, never with torch's multi-line key listing.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from imagineid.errors import MalformedWeightsError, see_docs
from imagineid.safe_loading import load_torch


def _reason(err: Exception) -> str:
    """The informative line of torch's load_state_dict error, shortened."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    useful = [line for line in lines if line.startswith(("Missing", "Unexpected", "size mismatch"))]
    return (useful or lines or [type(err).__name__])[0][:200]


def load_state(model: nn.Module, path: str | Path, section: str, what: str, state: dict | None = None) -> nn.Module:
    """Load `path` (torch.load, weights_only=True) into `model` strictly → the model in eval mode."""
    if state is None:
        state = load_torch(path, section, what=what)
    if not isinstance(state, dict):
        raise MalformedWeightsError(f"{path} holds a {type(state).__name__}, not a state dict ({see_docs(section)})")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise MalformedWeightsError(f"{path} is not {what}: {_reason(err)} ({see_docs(section)})") from err
    return model.eval()
