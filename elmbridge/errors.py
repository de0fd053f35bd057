"""Exceptions for problems the user can fix.

Everything raised for bad input derives from `UserError` so that command-line entry
points can print the message alone (no traceback) while real bugs keep their traceback.
"""


class UserError(ValueError):
    """Bad input or configuration. The message says what was wrong and what to do."""


class MissingDataError(UserError, FileNotFoundError):
    """A file or data set is absent and cannot be fetched. The message says how to get it."""


def check_config(
    config: object,
    positive_ints: tuple[str, ...] = (),
    positive: tuple[str, ...] = (),
    increasing: tuple[tuple[str, str], ...] = (),
) -> None:
    """Raise a `UserError` naming the first field of `config` that breaks a rule.

    positive_ints: fields that must be integers > 0 (bools are not integers here).
    positive: fields that must be > 0 (NaN fails too).
    increasing: (low, high) field pairs that must satisfy low < high.
    """
    for name in positive_ints:
        value = getattr(config, name)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise UserError(f"{name} must be a positive integer, got {value!r}")
    for name in positive:
        if not getattr(config, name) > 0:
            raise UserError(f"{name} must be positive, got {getattr(config, name)!r}")
    for low, high in increasing:
        if not getattr(config, low) < getattr(config, high):
            raise UserError(
                f"{low} must be smaller than {high}, got {low}={getattr(config, low)}, "
                f"{high}={getattr(config, high)}"
            )
