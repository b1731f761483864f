"""The one error type users see: a clear sentence naming the problem and the fix."""


class TunesmithError(Exception):
    """A problem with the user's input or options. The CLI prints it as one line and exits 2."""

    exit_code = 2


class RunInterrupted(TunesmithError):
    """Training stopped on request (SIGINT/SIGTERM) after writing a checkpoint."""

    exit_code = 130


def did_you_mean(name: str, choices, flags: bool = False) -> str:
    """A ' Did you mean ...?' hint with the closest choices, or ''. flags=True: the names are command-line
    options, matched without their leading dashes (every one has them) and shown unquoted."""
    import difflib
    import re

    choices = [str(c) for c in choices]
    bare = {c.lstrip("-") if flags else c: c for c in choices}
    name = str(name).lstrip("-") if flags else str(name)
    # a near spelling first ('epoch' -> 'epochs'), then a choice holding the name as a word ('review' ->
    # 'Customer Review'), then looser spellings
    close = difflib.get_close_matches(name, list(bare), n=3, cutoff=0.75)
    close = close or [c for c in bare if len(name) >= 3 and name.lower() in re.split(r"[\W_]+", c.lower())][:3]
    close = close or difflib.get_close_matches(name, list(bare), n=3, cutoff=0.5)
    if not close:
        lowered = {c.lower(): c for c in bare}
        close = [lowered[n] for n in difflib.get_close_matches(name.lower(), list(lowered), n=3, cutoff=0.5)]
    shown = [bare[c] if flags else repr(c) for c in close]
    return f" Did you mean {' or '.join(shown)}?" if close else ""
