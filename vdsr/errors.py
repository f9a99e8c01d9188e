"""The one error type for bad user input (files, folders, arguments).

Its message is one line that names the file (or argument) and the problem; the ``vdsr``
command prints it as ``vdsr <command>: error: <message>`` and exits with status 2.
"""


class InputError(ValueError):
    """Bad input from the user: the message names the file and the problem."""
