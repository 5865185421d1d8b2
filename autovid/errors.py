"""Errors the CLI reports in one line: bad user input (exit code 2) and runs that failed (exit code 1)."""


class UserError(Exception):
    """Bad input from the user (config, paths, names); its message is one line naming what is wrong."""


class RunFailed(Exception):
    """A run that started but could not finish (diverged, every trial failed); one line, exit code 1."""


class TrainingDiverged(RunFailed):
    """The training loss became NaN or infinite: the run stops instead of finishing with garbage."""


def printable(text: str) -> str:
    """`text` safe for one line of a log or an error: control characters (a newline or carriage return in a file
    name, a terminal escape) written as Python escapes, `\\n`, `\\r`, `\\x1b`, so that a name cannot forge lines."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)
