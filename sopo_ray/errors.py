"""User-facing errors: one line that names the problem and the fix.

Anything a user can cause (bad config, missing data, wrong checkpoint, unreachable cluster) raises
`SopoError`; the CLI prints its message on one line and exits with status 2 instead of a traceback.
"""


class SopoError(Exception):
    """An error caused by the user's input; the message says what is wrong and how to fix it."""


class ConfigError(SopoError):
    """A config file, key or value is invalid."""


class DataError(SopoError):
    """A dataset folder or file is missing or malformed."""


class CheckpointError(SopoError):
    """A checkpoint is missing, corrupt, or belongs to another model/config/dataset."""


class ClusterError(SopoError):
    """The Ray cluster cannot be reached or cannot satisfy the requested resources."""
