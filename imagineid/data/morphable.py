"""DATA/morphable/: the dataset's fitted morphable-model versions and the CURRENT pointer to the one in use.

Preprocessing writes versions; training, generation checks and evaluation read the current one.
"""

from __future__ import annotations

from pathlib import Path

from imagineid.data.store import Store
from imagineid.errors import NotBuiltYetError
from imagineid.face.morphable import PCAMorphableModel

CURRENT = "CURRENT"


def current_model(store: Store) -> PCAMorphableModel | None:
    """The dataset's morphable model in use (the version CURRENT names), or None before the first fit."""
    pointer = store.morphable / CURRENT
    if not pointer.exists():
        return None
    folder = store.morphable / pointer.read_text().strip()
    from imagineid.face.flame_morphable import is_flame_folder

    if is_flame_folder(folder):
        raise NotBuiltYetError(
            f"{store.root} holds FLAME coefficients (--morphable flame); training and generation read PCA datasets "
            f"only so far: preprocess into another folder with --morphable pca"
        )
    return PCAMorphableModel.load(folder)


def point_current(store: Store, folder: Path) -> None:
    """Make `folder` (a version under DATA/morphable/) the one in use, atomically."""
    tmp = store.morphable / f".{CURRENT}.tmp"
    tmp.write_text(folder.name)
    tmp.replace(store.morphable / CURRENT)


def current_kind(store: Store) -> str | None:
    """ "pca" or "flame": the kind of coefficients the dataset holds (None before the first fit)."""
    pointer = store.morphable / CURRENT
    if not pointer.exists():
        return None
    from imagineid.face.flame_morphable import is_flame_folder

    return "flame" if is_flame_folder(store.morphable / pointer.read_text().strip()) else "pca"
