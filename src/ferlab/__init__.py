"""ferlab: train, tune, evaluate and use image classifiers; emotions from faces in photos.

``from ferlab import EmotionRecognizer, load_model`` loads lazily: importing ferlab imports no
heavy dependency and changes no global state.
"""

__version__ = "0.2.0"  # the single source of the version; CHANGELOG.md says what it holds
__all__ = ["EmotionRecognizer", "Face", "load_model", "__version__"]


def __getattr__(name: str):
    if name == "load_model":
        from ferlab.inference.models import load_model

        return load_model
    if name in ("EmotionRecognizer", "Face"):
        from ferlab.vision import recognizer

        return getattr(recognizer, name)
    raise AttributeError(f"module 'ferlab' has no attribute {name!r}")
