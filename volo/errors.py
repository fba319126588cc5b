"""The one exception type for mistakes a user can fix.

Raise `VoloError` with a sentence that names the file or flag and says what to do. The CLI prints it as one
line (no traceback). Internal invariants use `assert` instead.
"""


class VoloError(ValueError):
    """A user-facing error: bad input, a wrong flag, a file that is not what it should be."""
