"""Errors that ferlab reports to users as one clear line."""


class FerlabError(Exception):
    """A problem with user input or files, shown without a traceback."""


class DataError(FerlabError, ValueError):
    """Bad or unreadable data."""


class ImageTooLarge(DataError):
    """An image with more pixels than accepted (a decompression bomb among them)."""


class UnknownImageFormat(DataError):
    """Data that is not an image, or in a format ferlab cannot decode."""


class ModelFileError(FerlabError, ValueError):
    """A model or checkpoint file that is missing, corrupt or not ferlab's."""


class ConfigError(FerlabError, ValueError):
    """A bad configuration or search-space file."""


class TrainingDiverged(FerlabError, FloatingPointError):
    """The loss became NaN or infinite."""
