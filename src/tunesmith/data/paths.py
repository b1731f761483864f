"""Paths listed inside a data file (image and audio columns): they stay inside the data folder.

A CSV row saying `../../home/me/.ssh/id_rsa` or `/etc/passwd` must not make tunesmith read that
file. Paths are resolved (symlinks followed) before the check, so a link inside the folder that
points outside is refused too. A folder of class folders is scanned by tunesmith itself, so links the
user put in it are followed (the caller allows that); only a data file's cells are held to its folder.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import TunesmithError


def safe_member_path(base: str | Path, relative, allow_outside: bool = False, where: str = "the data file") -> Path:
    """`relative` (a cell of `where`) resolved against the folder `base`; refused if it leaves it."""
    if not isinstance(relative, str) or not relative.strip():
        raise TunesmithError(f"{where} has an empty or non-text path cell ({relative!r}); give every row a file path.")
    if "\x00" in relative:
        raise TunesmithError(f"{where} has a path with a NUL character ({relative!r}); fix that cell.")
    base = Path(base).resolve()
    path = (base / os.path.expanduser(relative.strip())).resolve()  # an absolute path replaces base here
    if not allow_outside and not path.is_relative_to(base):
        raise TunesmithError(f"{where} lists '{relative}', which is outside the data folder '{base}'; keep the files inside "
                             f"that folder, or put the data file in a folder that holds them all.")
    return path
