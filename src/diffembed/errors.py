"""The errors a user causes and can fix, below every other module.

``DiffembedError`` is the base of each of them: a file that is missing or malformed, a flag or
setting we refuse, a model directory that is not one, an output that would overwrite something.
Its message is the one line the user sees, naming the input (file and line, flag, setting) and,
where there is one, the way out. ``diffembed`` prints it as ``diffembed VERB: error: MESSAGE``
and exits 2; any other exception that escapes a verb is a bug and keeps its traceback.

Library code raises these where it knows which input caused the problem; where a library's own
error (OSError, JSONDecodeError, ...) stands for a user's mistake, it is converted at the
boundary that knows the input. ``DiffembedError`` subclasses ``ValueError`` (and the OS-flavoured
ones the matching ``OSError``), so callers that catch those keep working.
"""

from __future__ import annotations


class DiffembedError(ValueError):
    """A problem the user caused and can fix; the message names the input and the way out."""

    def __str__(self) -> str:
        # The message as given, also for subclasses that mix in KeyError (which quotes it).
        return str(self.args[0]) if len(self.args) == 1 else super().__str__()


class ConfigError(DiffembedError):
    """A setting (command-line flag, config file field, settings object) has a value, or a
    combination with another setting, that is refused."""


class FileFormatError(DiffembedError):
    """A file's content is not what it must be (invalid JSON, a missing field); the message
    names the file and, where known, the line."""


class InputNotFoundError(DiffembedError, FileNotFoundError):
    """An input file or folder does not exist."""


class OutputExistsError(DiffembedError, FileExistsError):
    """An output would replace something that must not be replaced without being asked."""


class OutputIsDirectoryError(DiffembedError, IsADirectoryError):
    """A file output names a directory."""


class NotADirectoryOutputError(DiffembedError, NotADirectoryError):
    """A file stands where an output folder must be."""


class NotWritableError(DiffembedError, PermissionError):
    """An output's folder takes no new file."""
