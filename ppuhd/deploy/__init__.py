"""Export to Paddle inference (and ONNX) models and run them."""

from .export import OnnxConversionError, convert_to_onnx, export_model, max_export_difference
from .predictor import (BACKENDS, BackendError, ExportedModel, ExportFolderError, InputSizeError, OnnxPredictor,
                        Predictor, create_predictor, top_k)

__all__ = ["export_model", "convert_to_onnx", "max_export_difference", "OnnxConversionError", "BACKENDS",
           "BackendError", "ExportedModel", "ExportFolderError", "InputSizeError", "OnnxPredictor", "Predictor",
           "create_predictor", "top_k"]
