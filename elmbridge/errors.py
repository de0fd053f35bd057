"""Exceptions for problems the user can fix.

Everything raised for bad input derives from `UserError` so that command-line entry
points can print the message alone (no traceback) while real bugs keep their traceback.
"""


class UserError(ValueError):
    """Bad input or configuration. The message says what was wrong and what to do."""


class MissingDataError(UserError, FileNotFoundError):
    """A file or data set is absent and cannot be fetched. The message says how to get it."""
