"""Embedded base models and bundled datasets that install from package registries (no hub)."""
from .registry import DATASETS, MODELS, DatasetAsset, ModelAsset, dataset_files, model_path

__all__ = ["DATASETS", "MODELS", "DatasetAsset", "ModelAsset", "dataset_files", "model_path"]
