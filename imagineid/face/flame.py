"""FLAME (Li et al. 2017), the paper-scale 3DMM (docs/architecture.md §4): parameters → mesh by linear blend skinning.

    flame = FLAME.from_files("models/flame")  # generic_model.pkl + landmark_embedding.npy, local files only
    out = flame(shape, expression, global_pose=g, jaw_pose=j)  # shape (B, 100), expression (B, 50)
    out.vertices   # (B, V, 3): 5023 vertices for FLAME 2020, metres, y up, looking along +z
    out.landmarks  # (B, 68, 3): the 68 iBUG points on the mesh

Model file: FLAME 2020 `generic_model.pkl`, read by `safe_loading.load_pickle` (no chumpy, no code run):
`v_template` (V, 3), `shapedirs` (V, 3, 400: 300 shape then 100 expression), `posedirs` (V, 3, 36),
`J_regressor` (5, V) sparse, `weights` (V, 5), `kintree_table` (2, 5), `f` (F, 3). The 5 joints are
global (root), neck, jaw, left eye, right eye; the full pose is 5 axis-angle vectors (15 numbers).

Landmark embedding (barycentric points on mesh faces), either layout:
- DECA's `landmark_embedding.npy`: a pickled dict with `full_lmk_faces_idx` (1, 68), `full_lmk_bary_coords`
  (1, 68, 3) — used here — plus static (51) / dynamic (79 yaw bins × 17 contour) points we keep unused;
- a static 68-point file, as FLAME's `flame_static_embedding.pkl` is laid out but with the jaw contour:
  `lmk_face_idx` (68,) and `lmk_b_coords` (68, 3), as .pkl, .npy or .npz. The 51-point original has no
  jaw line and is refused (the mouth-only selection and the 68-point pipeline need all 68).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from imagineid.errors import MalformedWeightsError, see_docs
from imagineid.safe_loading import load_npy, load_npz, load_pickle

SECTION = "FLAME"
MODEL_FILE = "generic_model.pkl"
EMBEDDING_FILES = ("landmark_embedding.npy", "flame_static_embedding_68.pkl", "flame_static_embedding.pkl")
N_SHAPE_TOTAL = 300  # shapedirs columns before the expression columns start
_KEYS = ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table", "f")


@dataclass
class FlameOutput:
    vertices: torch.Tensor  # (B, V, 3)
    landmarks: torch.Tensor | None  # (B, 68, 3), None without an embedding
    joints: torch.Tensor  # (B, 5, 3) posed joint locations


def batch_rodrigues(axis_angle: torch.Tensor) -> torch.Tensor:
    """Axis-angle (N, 3) → rotation matrices (N, 3, 3); zero vectors give the identity."""
    angle = torch.linalg.norm(axis_angle + 1e-8, dim=1, keepdim=True)  # (N, 1), never 0
    axis = axis_angle / angle
    cos, sin = torch.cos(angle)[:, :, None], torch.sin(angle)[:, :, None]
    x, y, z = axis[:, 0], axis[:, 1], axis[:, 2]
    zero = torch.zeros_like(x)
    k = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=1).view(-1, 3, 3)  # cross-product matrix
    eye = torch.eye(3, dtype=axis_angle.dtype, device=axis_angle.device)[None]
    return eye + sin * k + (1 - cos) * torch.bmm(k, k)


def _rigid_transforms(
    rotations: torch.Tensor, joints: torch.Tensor, parents: list[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward kinematics. rotations (B, J, 3, 3), rest joints (B, J, 3) → posed joints (B, J, 3) and the
    per-joint transforms (B, J, 4, 4) that map rest-pose points to posed points."""
    b, j = joints.shape[:2]
    rel = joints.clone()
    rel[:, 1:] = joints[:, 1:] - joints[:, parents[1:]]
    local = torch.zeros(b, j, 4, 4, dtype=joints.dtype, device=joints.device)
    local[:, :, :3, :3] = rotations
    local[:, :, :3, 3] = rel
    local[:, :, 3, 3] = 1.0
    chain = [local[:, 0]]
    for i in range(1, j):
        chain.append(chain[parents[i]] @ local[:, i])
    world = torch.stack(chain, dim=1)  # (B, J, 4, 4)
    posed = world[:, :, :3, 3]
    rest = torch.einsum("bjik,bjk->bji", world[:, :, :3, :3], joints)  # where each rest joint moves by R
    out = world.clone()
    out[:, :, :3, 3] = posed - rest  # transform of rest-pose points, not of joint-local ones
    return posed, out


def skin(
    v_shaped: torch.Tensor,
    joints: torch.Tensor,
    pose: torch.Tensor,
    posedirs: torch.Tensor,
    lbs_weights: torch.Tensor,
    parents: list[int],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pose correctives + linear blend skinning, shared by the full mesh and any subset of its vertices.

    v_shaped (B, N, 3) blend-shaped rest vertices, joints (B, J, 3) their rest joints, pose (B, 3·J)
    axis-angle, posedirs (9·(J−1), N·3), lbs_weights (N, J) → posed vertices (B, N, 3), posed joints (B, J, 3).
    """
    b, n_joints = joints.shape[:2]
    rotations = batch_rodrigues(pose.reshape(-1, 3)).view(b, n_joints, 3, 3)
    eye = torch.eye(3, dtype=v_shaped.dtype, device=v_shaped.device)
    pose_feature = (rotations[:, 1:] - eye).reshape(b, -1)  # (B, 9·(J−1))
    v_posed = v_shaped + (pose_feature @ posedirs).view(b, -1, 3)
    posed_joints, transforms = _rigid_transforms(rotations, joints, parents)
    per_vertex = torch.einsum("vj,bjik->bvik", lbs_weights, transforms)  # (B, N, 4, 4)
    vertices = torch.einsum("bvik,bvk->bvi", per_vertex[:, :, :3, :3], v_posed) + per_vertex[:, :, :3, 3]
    return vertices, posed_joints


class FLAME(nn.Module):
    """FLAME as a torch module (buffers only: the model is fixed, we never train it)."""

    def __init__(
        self,
        arrays: dict[str, np.ndarray],
        landmark_faces: np.ndarray | None = None,
        landmark_bary: np.ndarray | None = None,
        n_shape: int = 100,
        n_expression: int = 50,
    ) -> None:
        super().__init__()
        v = arrays["v_template"].shape[0]
        dirs = arrays["shapedirs"]
        if n_shape > N_SHAPE_TOTAL or N_SHAPE_TOTAL + n_expression > dirs.shape[2]:
            raise MalformedWeightsError(
                f"FLAME shapedirs has {dirs.shape[2]} components: cannot take {n_shape} shape + {n_expression} "
                f"expression ({see_docs(SECTION)})"
            )
        self.n_shape, self.n_expression = n_shape, n_expression
        f32 = lambda a: torch.as_tensor(np.asarray(a, np.float32))
        self.register_buffer("v_template", f32(arrays["v_template"]))  # (V, 3)
        self.register_buffer("shapedirs", f32(dirs[:, :, :n_shape]))  # (V, 3, n_shape)
        self.register_buffer("exprdirs", f32(dirs[:, :, N_SHAPE_TOTAL : N_SHAPE_TOTAL + n_expression]))
        posedirs = np.asarray(arrays["posedirs"], np.float32)
        self.register_buffer("posedirs", f32(posedirs.reshape(-1, posedirs.shape[-1]).T))  # (36, V·3)
        self.register_buffer("J_regressor", f32(arrays["J_regressor"]))  # (5, V)
        self.register_buffer("lbs_weights", f32(arrays["weights"]))  # (V, 5)
        self.register_buffer("faces", torch.as_tensor(np.asarray(arrays["f"], np.int64)))  # (F, 3)
        parents = np.asarray(arrays["kintree_table"])[0].astype(np.int64)
        parents[0] = -1  # FLAME stores the root's parent as uint32 max
        self.parents = [int(p) for p in parents]
        self.n_joints = len(self.parents)
        if landmark_faces is not None:
            self.register_buffer("landmark_faces", torch.as_tensor(np.asarray(landmark_faces, np.int64).reshape(-1)))
            self.register_buffer("landmark_bary", f32(np.asarray(landmark_bary).reshape(-1, 3)))
        else:
            self.landmark_faces = self.landmark_bary = None
        _check(arrays, v, self.parents, landmark_faces)

    # -- loading ---------------------------------------------------------------------------------------
    @classmethod
    def from_files(
        cls, path: str | Path, landmarks: str | Path | None = None, n_shape: int = 100, n_expression: int = 50
    ) -> FLAME:
        """`path` is generic_model.pkl or the folder holding it; the landmark embedding is `landmarks`, or
        else the first of `EMBEDDING_FILES` next to the model."""
        path = Path(path).expanduser()
        model_file = path / MODEL_FILE if path.is_dir() else path
        arrays = load_pickle(model_file, SECTION, what=f"FLAME model ({MODEL_FILE})")
        if not isinstance(arrays, dict) or any(k not in arrays for k in _KEYS):
            got = sorted(arrays) if isinstance(arrays, dict) else type(arrays).__name__
            raise MalformedWeightsError(
                f"{model_file} is not a FLAME model: needs keys {', '.join(_KEYS)}, has {got} ({see_docs(SECTION)})"
            )
        if landmarks is None:
            found = [model_file.parent / n for n in EMBEDDING_FILES if (model_file.parent / n).is_file()]
            landmarks = found[0] if found else model_file.parent / EMBEDDING_FILES[0]
        faces, bary = load_landmark_embedding(landmarks)
        return cls(arrays, faces, bary, n_shape, n_expression)

    # -- the model -------------------------------------------------------------------------------------
    def forward(
        self,
        shape: torch.Tensor,
        expression: torch.Tensor,
        global_pose: torch.Tensor | None = None,
        neck_pose: torch.Tensor | None = None,
        jaw_pose: torch.Tensor | None = None,
        eye_pose: torch.Tensor | None = None,
    ) -> FlameOutput:
        """shape (B, n_shape), expression (B, n_expression); poses axis-angle (B, 3), eyes (B, 6); None = 0."""
        b = shape.shape[0]
        zeros = lambda n: shape.new_zeros(b, n)
        pose = torch.cat(
            [
                global_pose if global_pose is not None else zeros(3),
                neck_pose if neck_pose is not None else zeros(3),
                jaw_pose if jaw_pose is not None else zeros(3),
                eye_pose if eye_pose is not None else zeros(6),
            ],
            dim=1,
        )  # (B, 15)
        # 1. Blend shapes: identity and expression offsets on the template
        v_shaped = (
            self.v_template
            + torch.einsum("bk,vck->bvc", shape, self.shapedirs)
            + torch.einsum("bk,vck->bvc", expression, self.exprdirs)
        )  # (B, V, 3)
        joints = torch.einsum("jv,bvc->bjc", self.J_regressor, v_shaped)  # (B, 5, 3)
        vertices, posed_joints = skin(v_shaped, joints, pose, self.posedirs, self.lbs_weights, self.parents)
        return FlameOutput(vertices, self.landmarks(vertices), posed_joints)

    def landmarks(self, vertices: torch.Tensor) -> torch.Tensor | None:
        """(B, V, 3) → (B, 68, 3) barycentric points of the embedding (None without one)."""
        if self.landmark_faces is None:
            return None
        corners = vertices[:, self.faces[self.landmark_faces]]  # (B, 68, 3 corners, 3)
        return torch.einsum("blkc,lk->blc", corners, self.landmark_bary)

    def template_landmarks(self) -> np.ndarray:
        """The 68 landmarks of the neutral template (68, 3)."""
        with torch.no_grad():
            return self.landmarks(self.v_template[None])[0].numpy()


def _check(arrays: dict, v: int, parents: list[int], landmark_faces: np.ndarray | None) -> None:
    """Shapes that must agree, else a clear error instead of a broadcasting failure later."""
    expected = {
        "shapedirs": (v, 3),
        "posedirs": (v, 3),
        "weights": (v, len(parents)),
        "J_regressor": (len(parents), v),
        "v_template": (v, 3),
    }
    for key, shape in expected.items():
        got = np.shape(arrays[key])
        if tuple(got[: len(shape)]) != shape:
            raise MalformedWeightsError(
                f"FLAME {key} has shape {got}, expected leading dimensions {shape} ({see_docs(SECTION)})"
            )
    if np.shape(arrays["posedirs"])[-1] != 9 * (len(parents) - 1):
        raise MalformedWeightsError(
            f"FLAME posedirs has {np.shape(arrays['posedirs'])[-1]} columns, expected {9 * (len(parents) - 1)} "
            f"({see_docs(SECTION)})"
        )
    if any(not 0 <= p < i for i, p in enumerate(parents) if i):
        raise MalformedWeightsError(
            f"FLAME kintree_table parents {parents} are not in kinematic order ({see_docs(SECTION)})"
        )
    n_faces = len(arrays["f"])
    if landmark_faces is not None and (np.max(landmark_faces) >= n_faces or np.min(landmark_faces) < 0):
        raise MalformedWeightsError(
            f"the landmark embedding points at face {int(np.max(landmark_faces))} but the model has {n_faces} faces "
            f"(embedding and model do not belong together; {see_docs(SECTION)})"
        )


def load_landmark_embedding(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """68 (face index, barycentric coordinates) pairs from either layout of the module docstring."""
    path = Path(path).expanduser()
    what = "FLAME 68-landmark embedding (landmark_embedding.npy)"
    if path.suffix == ".npz":
        data = load_npz(path, SECTION, what)
    elif path.suffix == ".npy":
        data = load_npy(path, SECTION, what)
    else:
        data = load_pickle(path, SECTION, what)
    if not isinstance(data, dict):
        raise MalformedWeightsError(
            f"{path} holds a {type(data).__name__}, expected a dict of arrays ({see_docs(SECTION)})"
        )
    for faces_key, bary_key in (("full_lmk_faces_idx", "full_lmk_bary_coords"), ("lmk_face_idx", "lmk_b_coords")):
        if faces_key in data and bary_key in data:
            faces = np.asarray(data[faces_key]).reshape(-1).astype(np.int64)
            bary = np.asarray(data[bary_key], np.float32).reshape(-1, 3)
            break
    else:
        raise MalformedWeightsError(
            f"{path} has keys {sorted(data)}; expected full_lmk_faces_idx / full_lmk_bary_coords (DECA) or "
            f"lmk_face_idx / lmk_b_coords (static 68) ({see_docs(SECTION)})"
        )
    if len(faces) != 68 or len(bary) != 68:
        raise MalformedWeightsError(
            f"{path} embeds {len(faces)} landmarks; 68 are needed (the 51-point static embedding has no jaw "
            f"contour: use DECA's landmark_embedding.npy) ({see_docs(SECTION)})"
        )
    return faces, bary


NOSE_BOTTOM = 33  # iBUG landmark at the base of the nose (subnasale): the lower face is below it


def lower_face_share(flame: FLAME) -> np.ndarray:
    """Per expression component, the share of its squared vertex displacement that lies below the nose.

    "Below the nose" is the template's vertices lower (FLAME: y up) than its landmark `NOSE_BOTTOM`:
    lips, jaw, chin and lower cheeks (and the neck, which expressions hardly move). A component with a
    share of 1 moves nothing above the nose. Components that move nothing at all get 0.
    """
    if flame.landmark_faces is None:
        raise MalformedWeightsError(f"selecting mouth components needs the 68-landmark embedding ({see_docs(SECTION)})")
    cut = flame.template_landmarks()[NOSE_BOTTOM, 1]
    lower = (flame.v_template[:, 1] < float(cut)).numpy()  # (V,)
    energy = (flame.exprdirs.numpy().astype(np.float64) ** 2).sum(axis=1)  # (V, n_expression)
    total = energy.sum(axis=0)
    return np.where(total > 0, energy[lower].sum(axis=0) / np.maximum(total, 1e-30), 0.0)
