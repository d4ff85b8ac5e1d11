"""FLAME fitted to a clip's tracked 2-D landmarks by optimisation, without DECA (docs/architecture.md §4).

    fitter = FlameFitter(FLAME.from_files("models/flame"))   # .to("cuda") works too
    fit = fitter.fit(landmarks)                              # landmarks (T, 68, 2) crop pixels, a tensor
    fit.shape (n_shape,)  fit.expression (T, n_expression)  fit.jaw_pose / fit.global_pose (T, 3)
    fit.camera (T, 3)     fit.residual_px (T,)
    pixels = project(flame(...).landmarks, fit.camera)       # the camera model below, (T, 68, 2)

One clip is one optimisation: a single identity **shape** for all its frames (identity does not change
within a clip, and sharing it is what lets the many views pin down 3-D shape that one view cannot);
per frame an **expression**, a **jaw pose**, a **global pose** and a **camera**. The camera is scaled
orthographic — `camera = (log s, tx, ty)`, pixel = s·(x, −y) + t of the posed model point — because a
face crop is small in the field of view: perspective would add a depth parameter the landmarks hardly
constrain. The log keeps the scale positive without a constraint.

The objective is a MAP estimate: squared reprojection error over the landmark noise variance, plus
unit Gaussian priors on shape and expression (FLAME's coefficients are unit-variance by construction),
a Gaussian prior on the jaw, and temporal smoothness (first differences of every per-frame parameter),
because tracked landmarks jitter from frame to frame and faces do not. Weights are `FitConfig` fields.

Only the 68 landmarks enter the objective, so the fit runs a cut-down FLAME (`LandmarkFlame`) on the
corners of the landmark triangles, with the joint regressor folded into linear bases: the same numbers
as the full model for those points at a fraction of the cost. Everything is batched over frames and
runs on whatever device the landmarks and the model are on. The optimiser is L-BFGS with a strong-Wolfe
line search: the problem is a smooth, small least-squares one, where quasi-Newton steps converge to
sub-pixel residuals in far fewer evaluations than first-order methods.

The jaw-line landmarks (0–16) use FLAME's static embedding: on a real face the visible contour slides
with yaw (DECA's dynamic contour), so for strongly turned heads `FitConfig.contour_weight` can down-weight
them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from imagineid.face.flame import FLAME, skin

N_CONTOUR = 17  # iBUG 0..16: the jaw line


@dataclass(frozen=True)
class FitConfig:
    """Objective weights and optimiser budget. Standard deviations are in the unit of what they weigh."""

    landmark_sigma_px: float = 1.0  # tracked landmark noise
    shape_prior: float = 1.0  # × ‖β‖²: FLAME shape coefficients are N(0, 1)
    expression_prior: float = 1.0  # × Σ_t ‖ψ_t‖²
    jaw_sigma: float = 0.3  # radians: a wide prior, only there to break ties with the expression
    smooth_expression: float = 1.0  # × Σ_t ‖ψ_t − ψ_{t−1}‖² / (std of a frame-to-frame change)²
    smooth_pose: float = 100.0  # × Σ_t ‖Δ pose‖² (radians) for global and jaw pose
    smooth_camera: float = 0.0  # × Σ_t ‖Δ camera‖² (log scale, px); 0: the camera follows the crop freely
    contour_weight: float = 1.0  # weight of the jaw-line landmarks 0..16 against the others (1)
    rigid_iterations: int = 30  # pose + camera only, from the similarity initialisation
    iterations: int = 200  # everything
    tolerance: float = 1e-10  # L-BFGS change tolerance on the objective


@dataclass
class FlameFit:
    shape: torch.Tensor  # (n_shape,)
    expression: torch.Tensor  # (T, n_expression)
    jaw_pose: torch.Tensor  # (T, 3) axis-angle
    global_pose: torch.Tensor  # (T, 3) axis-angle
    camera: torch.Tensor  # (T, 3) log scale, tx, ty
    residual_px: torch.Tensor  # (T,) mean landmark reprojection error


def project(points: torch.Tensor, camera: torch.Tensor) -> torch.Tensor:
    """Scaled orthographic camera: model points (B, N, 3) (y up) → pixels (B, N, 2) (y down)."""
    flip = points.new_tensor([1.0, -1.0])
    return torch.exp(camera[:, None, :1]) * points[..., :2] * flip + camera[:, None, 1:]


class LandmarkFlame(nn.Module):
    """FLAME restricted to the vertices its 68 landmarks interpolate, joints as linear bases."""

    def __init__(self, flame: FLAME) -> None:
        super().__init__()
        if flame.landmark_faces is None:
            raise ValueError("fitting landmarks needs FLAME's 68-landmark embedding")
        corners = flame.faces[flame.landmark_faces]  # (68, 3)
        used, inverse = torch.unique(corners.reshape(-1), return_inverse=True)
        n = len(used)
        self.parents = flame.parents
        self.register_buffer("corners", inverse.view(-1, 3))  # (68, 3) indices into `used`
        self.register_buffer("bary", flame.landmark_bary.clone())  # (68, 3)
        self.register_buffer("template", flame.v_template[used].clone())  # (N, 3)
        self.register_buffer("shapedirs", flame.shapedirs[used].clone())  # (N, 3, n_shape)
        self.register_buffer("exprdirs", flame.exprdirs[used].clone())  # (N, 3, n_expression)
        posedirs = flame.posedirs.view(flame.posedirs.shape[0], -1, 3)[:, used]
        self.register_buffer("posedirs", posedirs.reshape(posedirs.shape[0], n * 3).clone())  # (36, N·3)
        self.register_buffer("lbs_weights", flame.lbs_weights[used].clone())  # (N, J)
        reg = flame.J_regressor
        self.register_buffer("joint_template", reg @ flame.v_template)  # (J, 3)
        self.register_buffer("joint_shapedirs", torch.einsum("jv,vck->jck", reg, flame.shapedirs))  # (J, 3, K)
        self.register_buffer("joint_exprdirs", torch.einsum("jv,vck->jck", reg, flame.exprdirs))  # (J, 3, E)

    def curvature(self, pixel_scale: float, n_frames: int, cfg: FitConfig) -> dict[str, torch.Tensor]:
        """Per variable, √(Gauss–Newton curvature) of the objective near the template: the optimiser works
        on variable × this, so every direction has a similar curvature. Without it the variables span
        six orders of magnitude (a pixel of translation against a radian of head turn) and L-BFGS crawls.
        """
        s2 = pixel_scale**2 / cfg.landmark_sigma_px**2
        corner = lambda d: torch.einsum("lkc...,lk->lc...", d[self.corners], self.bary)  # (68, 3, ...)
        rest = corner(self.template)  # (68, 3)
        visible = lambda d: (d[:, :2] ** 2).sum(dim=(0, 1))  # in-image squared motion, summed over landmarks
        shape = (n_frames * s2 * visible(corner(self.shapedirs)) + cfg.shape_prior).sqrt()  # shared by all frames
        expression = (s2 * visible(corner(self.exprdirs)) + cfg.expression_prior).sqrt()
        lever = lambda joint, w: s2 * (w[:, None] * (rest - self.joint_template[joint]) ** 2).sum()
        jaw_w = torch.einsum("lk,lk->l", self.lbs_weights[self.corners, 2], self.bary)
        head = lever(0, torch.ones_like(jaw_w)).sqrt()
        jaw = (lever(2, jaw_w**2) + 1 / cfg.jaw_sigma**2).sqrt()
        n = float(len(rest))
        camera = torch.stack([head, *[torch.tensor(n / cfg.landmark_sigma_px**2).sqrt().to(head)] * 2])
        return {
            "shape": shape[None],
            "expression": expression[None],
            "jaw_pose": jaw.expand(1, 3),
            "global_pose": head.expand(1, 3),
            "camera": camera[None],
        }

    def forward(
        self, shape: torch.Tensor, expression: torch.Tensor, global_pose: torch.Tensor, jaw_pose: torch.Tensor
    ) -> torch.Tensor:
        """shape (B, K) or (1, K) shared by the batch, expression (B, E), poses (B, 3) → landmarks (B, 68, 3)."""
        b = expression.shape[0]
        v_shaped = (
            self.template
            + torch.einsum("bk,vck->bvc", shape, self.shapedirs)
            + torch.einsum("bk,vck->bvc", expression, self.exprdirs)
        )  # (B, N, 3)
        joints = (
            self.joint_template
            + torch.einsum("bk,jck->bjc", shape, self.joint_shapedirs)
            + torch.einsum("bk,jck->bjc", expression, self.joint_exprdirs)
        )  # (B, J, 3)
        zeros = expression.new_zeros(b, 3)
        pose = torch.cat([global_pose, zeros, jaw_pose, expression.new_zeros(b, 3 * (len(self.parents) - 3))], 1)
        vertices, _ = skin(v_shaped, joints, pose, self.posedirs, self.lbs_weights, self.parents)
        return torch.einsum("blkc,lk->blc", vertices[:, self.corners], self.bary)


class FlameFitter(nn.Module):
    """Fits one clip at a time (see the module docstring); a module only so `.to(device)` moves it."""

    def __init__(self, flame: FLAME, config: FitConfig | None = None) -> None:
        super().__init__()
        self.model = LandmarkFlame(flame)
        self.config = config or FitConfig()
        self.n_shape, self.n_expression = flame.n_shape, flame.n_expression
        self.register_buffer("template_landmarks", flame.landmarks(flame.v_template[None])[0].detach().clone())

    def fit(self, landmarks: torch.Tensor) -> FlameFit:
        """landmarks (T, 68, 2) in crop pixels (y down), on the fitter's device → the clip's `FlameFit`."""
        cfg = self.config
        target = landmarks.to(self.template_landmarks)
        t = target.shape[0]
        weights = torch.ones(68, dtype=target.dtype, device=target.device)
        weights[:N_CONTOUR] = cfg.contour_weight
        camera, roll = _similarity_init(self.template_landmarks, target)
        start = {
            "shape": target.new_zeros(1, self.n_shape),
            "expression": target.new_zeros(t, self.n_expression),
            "jaw_pose": target.new_zeros(t, 3),
            "global_pose": torch.stack([torch.zeros_like(roll), torch.zeros_like(roll), roll], dim=1),
            "camera": camera,
        }
        scale = self.model.curvature(float(camera[:, 0].exp().mean()), t, cfg)
        u = {k: v * scale[k] for k, v in start.items()}  # optimised: unit curvature per variable

        def params() -> dict[str, torch.Tensor]:
            return {k: u[k] / scale[k] for k in u}

        def objective() -> torch.Tensor:
            p = params()
            points = project(self.model(p["shape"], p["expression"], p["global_pose"], p["jaw_pose"]), p["camera"])
            data = (((points - target) ** 2).sum(-1) * weights).sum() / (2 * cfg.landmark_sigma_px**2)
            prior = 0.5 * (
                cfg.shape_prior * (p["shape"] ** 2).sum()
                + cfg.expression_prior * (p["expression"] ** 2).sum()
                + (p["jaw_pose"] ** 2).sum() / cfg.jaw_sigma**2
            )
            diff = lambda x: ((x[1:] - x[:-1]) ** 2).sum()
            smooth = 0.5 * (
                cfg.smooth_expression * diff(p["expression"])
                + cfg.smooth_pose * (diff(p["global_pose"]) + diff(p["jaw_pose"]))
                + cfg.smooth_camera * diff(p["camera"])
            )
            return data + prior + smooth

        _minimise(objective, [u["global_pose"], u["camera"]], cfg.rigid_iterations, cfg.tolerance)
        _minimise(objective, list(u.values()), cfg.iterations, cfg.tolerance)
        with torch.no_grad():
            p = params()
            points = project(self.model(p["shape"], p["expression"], p["global_pose"], p["jaw_pose"]), p["camera"])
            residual = (points - target).norm(dim=-1).mean(dim=-1)
        return FlameFit(
            shape=p["shape"][0].detach(),
            expression=p["expression"].detach(),
            jaw_pose=p["jaw_pose"].detach(),
            global_pose=p["global_pose"].detach(),
            camera=p["camera"].detach(),
            residual_px=residual,
        )


def _minimise(objective, params: list[torch.Tensor], iterations: int, tolerance: float) -> None:
    """L-BFGS on `params` (leaf tensors, updated in place) for at most `iterations` steps."""
    if iterations <= 0:
        return
    for x in params:
        x.requires_grad_(True)
    optimiser = torch.optim.LBFGS(
        params,
        lr=1.0,
        max_iter=iterations,
        max_eval=int(iterations * 1.5),
        history_size=50,
        tolerance_grad=1e-9,
        tolerance_change=tolerance,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = objective()
        loss.backward()
        return loss

    optimiser.step(closure)
    for x in params:
        x.requires_grad_(False)


def _similarity_init(model_points: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per frame, the 2-D similarity (Umeyama) taking the template landmarks (68, 3) to the tracked ones
    (T, 68, 2) → camera (T, 3) and the in-plane roll (T,) of the head, as a start for the optimiser."""
    q = model_points[:, :2] * model_points.new_tensor([1.0, -1.0])  # (68, 2) y down
    qc = q - q.mean(0)
    pc = target - target.mean(1, keepdim=True)  # (T, 68, 2)
    qz = torch.complex(qc[:, 0], qc[:, 1])  # (68,)
    pz = torch.complex(pc[..., 0], pc[..., 1])  # (T, 68)
    a = (pz * qz.conj()).sum(-1) / (qz.abs() ** 2).sum()  # (T,) scale·e^{iθ}
    moved = a * torch.complex(q[:, 0].mean(), q[:, 1].mean())  # where the template's centroid lands, less t
    t = target.mean(1) - torch.stack([moved.real, moved.imag], -1)  # (T, 2)
    camera = torch.cat([a.abs().log()[:, None], t], dim=1)
    return camera, -torch.angle(a)  # a roll θ in the y-down image is −θ about FLAME's z (y up)
