"""Training runs: the run folder every kind of training shares (:class:`RunFolder`,
:mod:`ferlab.runs.folder`) and the fully connected run (:mod:`ferlab.runs.fc`; the CNN's is
:mod:`ferlab.deep.run`, a layer up)."""

from ferlab.runs.folder import RunFolder, data_digest

__all__ = ["RunFolder", "data_digest"]
