"""The error type for bad user input: the CLI turns it into one line and exit code 2."""


class UserError(Exception):
    """Bad input from the user (config, paths, names); its message is one line naming what is wrong."""
