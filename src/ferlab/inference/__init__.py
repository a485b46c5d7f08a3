"""Using trained models: one ``load_model`` for every model file kind (:mod:`.models`), ONNX models (:mod:`.onnx_model`), predicting a folder of images (:mod:`.predict`), what gave a result (:mod:`.versions`) and the original report's interface (:mod:`.compat`).

The package imports none of its modules, so each is imported on its own (and sits in its own
layer: see tests/test_layering.py)."""
