"""The one exception type users see: a clear, one-line message naming the file, row or option at fault."""


class CodistillError(Exception):
    """Bad input or configuration. The CLI prints ``error: <message>`` and exits with status 2."""


class DataError(CodistillError, ValueError):
    """A dataset could not be read or does not make sense (missing file, bad row, unknown column, ...)."""


class ConfigError(CodistillError, ValueError):
    """An option has a value that cannot work (named in the message)."""


class TrainingDiverged(CodistillError):
    """The loss became NaN or infinite: training stops at that step and nothing is saved."""
