"""The HyCon reader's error."""


class HyconError(Exception):
    """The file could not be fetched or is not a HyCon CSV3 day (a reason a person can act on)."""
