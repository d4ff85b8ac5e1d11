"""Faces: detection + 68 landmarks backends, warps, alignment, masks, morphable models, mesh render."""
