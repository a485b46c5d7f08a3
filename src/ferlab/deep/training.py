"""Names kept at their old address for modules that still import them from here.

The CNN's training lives in :mod:`ferlab.deep.trainer` (the loop), :mod:`ferlab.deep.run` (one
run into a folder) and :mod:`ferlab.deep.checkpoint`; ``ferlab.extend`` and ``ferlab.compare``
import these four names from here until they import them from there.
"""

from ferlab.deep.checkpoint import MODEL_NAME
from ferlab.deep.run import run_cnn_training
from ferlab.deep.trainer import CNNTrainer, TensorData

__all__ = ["MODEL_NAME", "CNNTrainer", "TensorData", "run_cnn_training"]
