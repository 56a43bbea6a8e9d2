"""The files of an export folder (written by ``export.py``, read by ``predictor.py``)."""

MODEL_PREFIX = "model"  # paddle.jit.save writes model.json (the graph, PIR) and model.pdiparams
ONNX_FILE = MODEL_PREFIX + ".onnx"  # --format onnx: the same graph converted by paddle2onnx
DEPLOY_FILE = "deploy.yml"  # format, task, input size, tile size, preprocessing, class names, tiling
EXPORT_FILES = (MODEL_PREFIX + ".json", MODEL_PREFIX + ".pdiparams", ONNX_FILE, DEPLOY_FILE)
