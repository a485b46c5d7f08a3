"""Scoring classifiers: the report's measures (:mod:`.metrics`), whether probabilities are calibrated (:mod:`.calibration`) and evaluating a model on images or on its data split (:mod:`.scoring`).

The package imports none of its modules, so each is imported on its own (and sits in its own
layer: see tests/test_layering.py)."""
