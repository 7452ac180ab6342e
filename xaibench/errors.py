"""Errors that reach the user as one line and exit code 2 (not a traceback)."""


class XaibenchError(Exception):
    """A problem the user can fix: bad option, missing or corrupt file, unusable checkpoint."""


class DataFileError(XaibenchError):
    """A dataset file is missing, corrupt or cannot be fetched."""


class ExplainerOutputError(XaibenchError):
    """An explainer returned the wrong shape or non-finite values."""


class NotApplicable(Exception):
    """A unit (or a method) that does not suit the model it was given (a ViT-only method on a CNN): shown as n/a."""
