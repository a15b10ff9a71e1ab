"""One check for every path the user asks us to write, before anything is written.

An output must not be an input (the model, or any of its external data files), must not be
another output, must be a regular file or absent, and its folder must exist and be writable.  A
symbolic link is followed: the bytes go to its target (the link stays a link), and a note says so.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from .errors import OutputPathError

_KINDS = {
    stat.S_ISDIR: "a directory",
    stat.S_ISCHR: "a character device",
    stat.S_ISBLK: "a block device",
    stat.S_ISFIFO: "a FIFO",
    stat.S_ISSOCK: "a socket",
}


@dataclass(frozen=True)
class OutputPath:
    """Where one output goes: ``path`` as given, ``target`` the file really written."""

    role: str  # "OUT", "--json", "the external data file", ...
    path: Path
    target: Path
    note: str | None = None  # one line for people when the target is not the path as given


def resolve_output(path: str | os.PathLike, role: str = "OUT", make_folders: bool = False) -> OutputPath:
    """The file an output path really names, or :class:`OutputPathError` saying why it cannot be written.

    ``make_folders``: the folder may be missing (the writer creates it) if its nearest existing
    ancestor is a writable folder.
    """
    given = Path(path)
    if "\0" in str(given):
        raise OutputPathError(f"{role} {str(given)!r}: a path cannot contain a NUL byte")
    note = None
    target = given
    if given.is_symlink():
        target = Path(os.path.realpath(given))
        note = f"{role} {given} is a symbolic link: writing its target {target}"
    try:
        st = target.stat()
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise OutputPathError(f"{role} {given}: cannot inspect it ({exc.strerror or exc})") from exc
    if st is not None and not stat.S_ISREG(st.st_mode):
        kind = next((name for test, name in _KINDS.items() if test(st.st_mode)), "not a regular file")
        raise OutputPathError(f"{role} {given} is {kind}; give the path of a regular file to write")
    folder = target.parent if str(target.parent) else Path(".")
    if make_folders:
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
    if not folder.is_dir():
        raise OutputPathError(f"{role} {given}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputPathError(f"{role} {given}: the folder {folder} is not writable")
    return OutputPath(role, given, target, note)


def same_file(a: Path, b: Path) -> bool:
    """True when two paths name the same file (existing or not)."""
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return os.path.realpath(a) == os.path.realpath(b)


def check_outputs(
    outputs: list[OutputPath], inputs: list[tuple[str, Path]], allow_overwrite: tuple[str, str] | None = None
) -> None:
    """Refuse outputs that name an input or one another.

    ``inputs`` are (role, path) pairs: the input model, its external data files, a second model.
    ``allow_overwrite`` = (output role, input role) is the one pair ``--force`` permits.
    """
    for out in outputs:
        for role, path in inputs:
            if same_file(out.target, path) and allow_overwrite != (out.role, role):
                hint = "; choose another path" + (" or pass --force" if (out.role, role) == ("OUT", "IN") else "")
                raise OutputPathError(f"{out.role} {out.path} is {role} ({path}){hint}")
    for k, a in enumerate(outputs):
        for b in outputs[k + 1:]:
            if same_file(a.target, b.target):
                raise OutputPathError(f"{a.role} and {b.role} are the same file ({a.path}); give them different paths")
