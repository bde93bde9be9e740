"""Data sets: 2-D points now; images come with the U-Net."""

from .toy2d import TOY_DATASETS, GaussianMixture, PointData, Standardizer, load_points

__all__ = ["TOY_DATASETS", "GaussianMixture", "PointData", "Standardizer", "load_points"]
