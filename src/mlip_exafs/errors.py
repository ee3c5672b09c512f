"""One exception type for problems the user can fix.

The CLI turns it into a single line on stderr and a non-zero exit, so every
message must say what is wrong *and* what to do about it.
"""


class UserError(Exception):
    """Bad input or environment; the message is shown to the user verbatim."""
