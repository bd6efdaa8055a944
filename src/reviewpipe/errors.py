"""The one error type for user mistakes: the CLI prints its message and exits 2, no traceback."""


class ReviewpipeError(Exception):
    """A problem the user can fix: the message says what is wrong and what to do."""
