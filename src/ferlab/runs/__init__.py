"""A training run's folder, shared by every kind of training (:class:`RunFolder`)."""

from ferlab.runs.folder import RunFolder, data_digest

__all__ = ["RunFolder", "data_digest"]
