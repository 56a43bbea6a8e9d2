"""Export to Paddle inference models and run them."""

from .export import export_model, max_export_difference
from .predictor import ExportFolderError, InputSizeError, Predictor, top_k

__all__ = ["export_model", "max_export_difference", "ExportFolderError", "InputSizeError", "Predictor", "top_k"]
