"""The files of an export folder (written by ``export.py``, read by ``predictor.py``)."""

MODEL_PREFIX = "model"  # paddle.jit.save writes model.json (the graph, PIR) and model.pdiparams
DEPLOY_FILE = "deploy.yml"  # task, input size, preprocessing, class names, tiling
EXPORT_FILES = (MODEL_PREFIX + ".json", MODEL_PREFIX + ".pdiparams", DEPLOY_FILE)
