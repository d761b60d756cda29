"""The project's own error type.

Every problem a user can fix (bad params, bad data, a missing file) is raised as a
:class:`CxrpruneError`; the command-line entry point prints its message on one line and
exits with status 2 instead of showing a traceback.
"""

from __future__ import annotations


class CxrpruneError(Exception):
    """A problem with the user's input or environment, with a message that says what to do."""


class ConfigError(CxrpruneError):
    """``params.yaml`` is malformed, has an unknown key, a wrong type or an out-of-range value."""


class DataError(CxrpruneError):
    """A dataset, label file, cache or prediction table is missing, damaged or inconsistent."""


class TrackingError(CxrpruneError):
    """The MLflow tracking store cannot be reached."""
