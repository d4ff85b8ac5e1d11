"""Losses of the listening stages (docs/architecture.md §1), and a differentiable copy of the offline 3DMM.

- `supervised_contrastive`: SupCon over L2-normalised embeddings (identity by speaker, emotion by label).
- `temporal_smoothness`: first differences of predicted coefficients follow the target's.
- `MorphableLandmarks`: `PCAMorphableModel.reconstruct` in torch, so coefficient predictions can be
  trained in landmark space; `landmark_loss` and `mouth_opening` measure them there.

    lm = MorphableLandmarks(PCAMorphableModel.load(DATA / "morphable" / version))
    points = lm(shape, mouth=mouth)  # (B, T, 68, 2) model frame
    loss = landmark_loss(points, target_points, mouth_only=True)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from imagineid.face.landmarks68 import INNER_LOWER, INNER_UPPER
from imagineid.face.morphable import PCAMorphableModel

MOUTH_SLICE = slice(48, 68)  # outer + inner lip points


def supervised_contrastive(embedding: torch.Tensor, labels: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """SupCon loss (Khosla et al. 2020) of embeddings (B, D), already L2-normalised, with labels (B,).

    Each row's positives are the other rows with its label; rows without a positive are ignored, and
    the loss is 0 (still attached to the graph) when no row has one.
    """
    if embedding.ndim != 2 or labels.shape != embedding.shape[:1]:
        raise ValueError(
            f"embedding must be (B, D) and labels (B,), got {tuple(embedding.shape)} and {tuple(labels.shape)}"
        )
    b = embedding.shape[0]
    self_mask = torch.eye(b, dtype=torch.bool, device=embedding.device)
    logits = (embedding @ embedding.T) / temperature  # (B, B)
    logits = logits.masked_fill(self_mask, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)  # (B, B), -inf on the diagonal
    positive = (labels[:, None] == labels[None, :]) & ~self_mask  # (B, B)
    n_pos = positive.sum(dim=1)  # (B,)
    has = n_pos > 0
    if not has.any():
        return embedding.sum() * 0.0
    pos_log_prob = log_prob.masked_fill(~positive, 0.0).sum(dim=1)  # (B,)
    return -(pos_log_prob[has] / n_pos[has]).mean()


def temporal_smoothness(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MSE between first differences over time of pred and target, both (B, T, K); 0 when T < 2."""
    if pred.shape != target.shape:
        raise ValueError(f"pred and target shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}")
    if pred.shape[1] < 2:
        return pred.sum() * 0.0
    return F.mse_loss(pred.diff(dim=1), target.diff(dim=1))


def mouth_opening(points: torch.Tensor, clip: bool = True) -> torch.Tensor:
    """Inner-lip gap / face width, (..., 68, 2) → (...), as `landmarks68.mouth_opening`.

    `clip=False` keeps negative gaps (lips pressed past each other): use it in losses, where the clipped
    version has no gradient once the lips touch.
    """
    upper = points[..., list(INNER_UPPER), 1]  # (..., 3)
    lower = points[..., list(INNER_LOWER), 1]
    gap = lower - upper
    if clip:
        gap = gap.clamp(min=0.0)
    width = torch.linalg.vector_norm(points[..., 16, :] - points[..., 0, :], dim=-1)
    return gap.mean(dim=-1) / width


def landmark_loss(
    pred_points: torch.Tensor,
    target_points: torch.Tensor,
    weights: torch.Tensor | None = None,
    mouth_only: bool = False,
) -> torch.Tensor:
    """Mean Euclidean distance between landmarks (..., 68, 2); `mouth_only` keeps points 48–67.

    `weights` (n_points,) or broadcastable to (..., n_points) weighs each point (after the selection).
    """
    if pred_points.shape != target_points.shape or pred_points.shape[-1] != 2:
        raise ValueError(
            f"pred and target must be equal (..., 68, 2) shapes, got {tuple(pred_points.shape)} "
            f"and {tuple(target_points.shape)}"
        )
    if mouth_only:
        pred_points, target_points = pred_points[..., MOUTH_SLICE, :], target_points[..., MOUTH_SLICE, :]
    dist = torch.linalg.vector_norm(pred_points - target_points, dim=-1)  # (..., n_points)
    if weights is None:
        return dist.mean()
    w = torch.as_tensor(weights, dtype=dist.dtype, device=dist.device).expand_as(dist)
    return (dist * w).sum() / w.sum().clamp(min=1e-12)


class MorphableLandmarks(nn.Module):
    """`PCAMorphableModel.reconstruct` (model frame, no pose) as a differentiable torch module.

    Buffers: `mean` (136,), `<part>_basis` (k, 136) orthonormal rows, `<part>_std` (k,) for part in
    shape / expression / mouth; they move with `.to(device)` and are saved in `state_dict`.
    """

    PARTS = ("shape", "expression", "mouth")

    def __init__(self, model: PCAMorphableModel) -> None:
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(model.mean.reshape(136), dtype=torch.float32))
        for part in self.PARTS:
            basis = model.arrays[f"{part}_basis"].reshape(-1, 136)
            self.register_buffer(f"{part}_basis", torch.as_tensor(basis, dtype=torch.float32))
            self.register_buffer(f"{part}_std", torch.as_tensor(model.arrays[f"{part}_std"], dtype=torch.float32))

    @property
    def n_shape(self) -> int:
        return self.shape_basis.shape[0]

    @property
    def n_expression(self) -> int:
        return self.expression_basis.shape[0]

    @property
    def n_mouth(self) -> int:
        return self.mouth_basis.shape[0]

    def _offset(self, part: str, coeffs: torch.Tensor) -> torch.Tensor:
        """Coefficients (..., k) → displacement (..., 136)."""
        basis, std = getattr(self, f"{part}_basis"), getattr(self, f"{part}_std")
        if coeffs.shape[-1] != basis.shape[0]:
            raise ValueError(f"{part} coefficients must have {basis.shape[0]} entries, got shape {tuple(coeffs.shape)}")
        return (coeffs * std) @ basis

    def forward(
        self,
        shape: torch.Tensor,
        mouth: torch.Tensor | None = None,
        expression: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """shape (B, n_shape) or (B, T, n_shape); mouth (B, T, n_mouth); expression (B, T, n_expression)
        → model-frame landmarks (B, T, 68, 2); T is 1 when nothing per-frame is given.

        Given both, the mouth coefficients replace the expression's mouth-subspace part (as in numpy).
        """
        if shape.ndim == 2:
            shape = shape.unsqueeze(1)  # (B, 1, n_shape)
        out = self.mean + self._offset("shape", shape)  # (B, 1 or T, 136)
        if expression is not None:
            e = self._offset("expression", expression)  # (B, T, 136)
            if mouth is not None:
                e = e - (e @ self.mouth_basis.T) @ self.mouth_basis  # drop its mouth-subspace part
            out = out + e
        if mouth is not None:
            out = out + self._offset("mouth", mouth)  # (B, T, 136)
        return out.reshape(*out.shape[:-1], 68, 2)  # (B, T, 68, 2)


def masked_mse(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """MSE over the frames marked valid: pred / target (B, T, K), valid (B, T) bool (padding is False)."""
    weight = valid.to(pred.dtype)[..., None]  # (B, T, 1)
    return (((pred - target) ** 2) * weight).sum() / (weight.sum() * pred.shape[-1]).clamp_min(1.0)
