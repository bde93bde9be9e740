"""Data sets: 2-D points (built-in shapes and point files) and images (MNIST, digits, CIFAR-10, folders)."""

from .points import POINT_DATASETS, GaussianMixture, PointData, Standardizer, load_points

__all__ = ["POINT_DATASETS", "GaussianMixture", "PointData", "Standardizer", "load_points"]
