"""Reading user files, inferring columns and labels, splitting, validating, batching."""
from .prepare import LabeledData, load_labeled_data
from .read import read_table

__all__ = ["LabeledData", "load_labeled_data", "read_table"]
