"""The one error type users see: a clear sentence naming the problem and the fix."""


class TunesmithError(Exception):
    """A problem with the user's input or options. The CLI prints it as one line and exits 2."""

    exit_code = 2


class RunInterrupted(TunesmithError):
    """Training stopped on request (SIGINT/SIGTERM) after writing a checkpoint."""

    exit_code = 130


def did_you_mean(name: str, choices) -> str:
    """A ' Did you mean ...?' hint with the closest choices, or ''."""
    import difflib

    choices = [str(c) for c in choices]
    close = difflib.get_close_matches(str(name), choices, n=3, cutoff=0.5)
    if not close:
        lowered = {c.lower(): c for c in choices}
        close = [lowered[n] for n in difflib.get_close_matches(str(name).lower(), list(lowered), n=3, cutoff=0.5)]
    return f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
