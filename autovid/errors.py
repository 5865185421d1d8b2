"""Errors the CLI reports in one line: bad user input (exit code 2) and runs that failed (exit code 1)."""


class UserError(Exception):
    """Bad input from the user (config, paths, names); its message is one line naming what is wrong."""


class RunFailed(Exception):
    """A run that started but could not finish (diverged, every trial failed); one line, exit code 1."""


class TrainingDiverged(RunFailed):
    """The training loss became NaN or infinite: the run stops instead of finishing with garbage."""
