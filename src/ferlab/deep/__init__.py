"""The PyTorch CNN for 48x48 faces (optional extra: ``pip install 'ferlab[deep]'``)."""

from ferlab.deep.classifier import CNNClassifier
from ferlab.deep.io import load_cnn, save_cnn
from ferlab.deep.model import FerCNN, build_cnn

__all__ = ["CNNClassifier", "FerCNN", "build_cnn", "load_cnn", "save_cnn"]
