"""Errors a user can cause and fix. The CLI prints them as one line and exits non-zero."""


class PeterRecError(Exception):
    """Base class: the message names the file, the field and the fix."""


class ConfigError(PeterRecError):
    """A config file or override is invalid."""


class DataError(PeterRecError):
    """An input data file is malformed or unusable."""


class CheckpointError(PeterRecError):
    """A run directory is missing, incomplete, corrupted or does not match."""


class TrainingError(PeterRecError):
    """Training cannot go on with these settings (e.g. the loss became NaN); the message says what to
    change."""
