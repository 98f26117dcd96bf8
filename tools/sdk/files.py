"""Files Docktor keeps for itself: private, owned by the user it runs as, never reached through a link.

The state directory holds what Docktor acts on (the pid it signals, the replicas it adopts, the
cooldowns it honours) and what it tells (decisions, observations, command lines). A directory
another user can write lets that user plant a symbolic link (``docktor.pid -> /etc/shadow``) or
forge a file (``local/worker.json`` naming a process to stop). So, as OpenSSH's ``StrictModes``
and systemd's ``StateDirectory=`` do, every folder is created ``0700``, every file ``0600``, and a
folder or file that another user owns or can write is refused with one line saying what to do;
files are opened with ``O_NOFOLLOW``, so a link is refused rather than followed. A file of this
user that others can merely read (an older Docktor's ``0644``) is tightened when opened; a folder
only when the caller names it as Docktor's own (``tighten``): a ``state_dir`` may be a folder the
user chose, and ``chmod 700`` on, say, ``/var/lib`` would break the machine.

One implementation for every writer: the daemon's own files, the decision log, the state files
and plugins' files under :attr:`Context.state_dir` (the local executor's replica records).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path

__all__ = ["UnsafePath", "open_private", "private_dir", "read_private", "readable_by_others", "write_atomic"]

#: group or others may write: another user could replace what is there
_WRITABLE_BY_OTHERS = stat.S_IWGRP | stat.S_IWOTH
#: group or others may read or search: tightened to 0700/0600 on what this user owns
_OPEN_TO_OTHERS = stat.S_IRWXG | stat.S_IRWXO


class UnsafePath(PermissionError):
    """A folder or file that another user could have written or redirected; the message is one
    line naming it, what is wrong, and how to fix it. A ``PermissionError``: code that meets an
    unwritable file carries on the same way (logs it), and the daemon's start refuses it."""

    #: the CLI's exit code: like a bad config, a setup the user must fix
    exit_code = 2


def _owner(uid: int) -> str:
    try:
        import pwd

        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except (KeyError, ImportError):
        return f"uid {uid}"


def _refuse_foreign(path: Path, st: os.stat_result, what: str) -> None:
    me = os.geteuid()
    if st.st_uid != me:
        raise UnsafePath(
            f"{what} {path} is owned by {_owner(st.st_uid)}, not by {_owner(me)} who runs docktor: "
            f"refusing it (another user could have planted what is in it); remove it or choose another"
        )
    if st.st_mode & _WRITABLE_BY_OTHERS:
        raise UnsafePath(
            f"{what} {path} is writable by {'group and others' if st.st_mode & stat.S_IWOTH and st.st_mode & stat.S_IWGRP else 'others' if st.st_mode & stat.S_IWOTH else 'its group'} "
            f"(mode {stat.S_IMODE(st.st_mode):04o}): refusing it; chmod {'700' if stat.S_ISDIR(st.st_mode) else '600'} it if its content is yours"
        )


def _check_ancestors(path: Path) -> None:
    """Every folder above ``path`` belongs to root or to this user, and no other user can rename
    entries in it (not writable by group/others, unless sticky like ``/tmp``)."""
    me = os.geteuid()
    for parent in path.parents:
        try:
            st = os.stat(parent)
        except OSError:
            continue
        if st.st_uid not in (0, me):
            raise UnsafePath(
                f"{parent} (above {path}) is owned by {_owner(st.st_uid)}: another user could replace "
                f"{path}; choose a state_dir under a folder of yours"
            )
        if st.st_mode & _WRITABLE_BY_OTHERS and not st.st_mode & stat.S_ISVTX:
            raise UnsafePath(
                f"{parent} (above {path}) is writable by other users (mode {stat.S_IMODE(st.st_mode):04o}) "
                f"and not sticky: another user could replace {path}; choose a state_dir under a folder of yours"
            )


def private_dir(path: Path, *, create: bool = True, what: str = "folder", tighten: bool = False) -> Path:
    """``path`` as a folder only this user can change: created ``0700`` when absent (with
    ``create``), refused (:class:`UnsafePath`) when it is a link, another user's, or writable by
    others, or when a folder above it lets another user replace it. With ``tighten`` (a folder
    Docktor names and owns, such as ``state/``), one that others can read is made ``0700``."""
    path = Path(os.path.abspath(path))
    _check_ancestors(path)
    if create:
        with contextlib.suppress(FileExistsError):
            os.makedirs(path.parent, exist_ok=True)
            os.mkdir(path, 0o700)
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        raise UnsafePath(f"{what} {path} is a symbolic link: refusing it; use the folder it points to")
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafePath(f"{what} {path} is not a folder")
    _refuse_foreign(path, st, what)
    if tighten and st.st_mode & _OPEN_TO_OTHERS:
        os.chmod(path, 0o700)  # lstat said it is no link
    return path


def readable_by_others(path: Path) -> bool:
    """Whether users other than the owner may list or enter the folder ``path``."""
    return bool(os.stat(path).st_mode & _OPEN_TO_OTHERS)


def open_private(path: Path, flags: int = os.O_RDONLY, *, create: bool = False) -> int:
    """A file descriptor on ``path`` (``os.open`` ``flags``), never through a symbolic link, for a
    regular file this user owns and no one else can write; created ``0600`` with ``create``, and
    tightened to ``0600`` when others could read it. Raises :class:`UnsafePath` for a link,
    another user's file or one others can write; ``FileNotFoundError`` when absent."""
    flags |= os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_CREAT if create else 0)
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as e:
        if e.errno == 40:  # ELOOP: the last component is a symbolic link
            raise UnsafePath(f"{path} is a symbolic link: refusing to open it (remove it)") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafePath(f"{path} is not a regular file: refusing to open it (remove it)")
        _refuse_foreign(path, st, "file")
        if st.st_mode & _OPEN_TO_OTHERS:
            os.fchmod(fd, 0o600)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_private(path: Path) -> bytes | None:
    """The content of the private file ``path`` (:func:`open_private`'s checks), None when absent."""
    try:
        fd = open_private(path)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as f:
        return f.read()


def write_atomic(path: Path, data: bytes, *, sync: bool = True) -> None:
    """Replace ``path`` with ``data`` in one step: a new ``0600`` file beside it (an unpredictable
    name, created exclusively, never through a link), written whole, then renamed over ``path``
    (a link there is replaced, not followed). With ``sync``, the file and its folder are flushed
    to disk, so a crash leaves the old content or the new, never a mix. A failure (a full disk)
    raises ``OSError`` and leaves ``path`` as it was."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if sync:
        dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
