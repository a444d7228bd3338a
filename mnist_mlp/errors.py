"""One exception for everything a user can fix, so entry points print a paragraph, not a trace."""


class UserError(Exception):
    """A problem the user can fix: the message names the file or key and says what to do."""
