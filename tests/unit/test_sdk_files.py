"""Private files (``docktor.tools.sdk.files``): created 0700/0600, tightened when ours and readable by
others, refused when another user owns them, could write them or could redirect them (a link, a
folder above writable by others), and replaced atomically without ever following a link.

Runs as root in CI: a path given to ``nobody`` (uid 65534) is another user's for real.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from docktor.tools.sdk import UnsafePath, open_private, private_dir, read_private, readable_by_others, write_atomic
from tests.support.peers import SmallDisk

NOBODY = 65534


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def give_to_nobody(path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("giving a file to another user needs root (CI runs as root)")
    os.chown(path, NOBODY, NOBODY, follow_symlinks=False)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A folder of ours that only we can write: what a state_dir's parent should be."""
    d = tmp_path / "home"
    d.mkdir(mode=0o700)
    return d


# --------------------------------------------------------------------------- folders


def test_a_new_folder_is_created_0700_with_its_parents(home: Path) -> None:
    created = private_dir(home / "a" / "state")
    assert created == home / "a" / "state"
    assert mode(created) == 0o700


def test_an_existing_0755_folder_of_ours_is_tightened_to_0700_only_when_docktor_names_it(home: Path) -> None:
    """A folder the user chose (a state_dir of /var/lib, /dev for a log on /dev/full) is never
    chmod'ed behind their back: a test doing that once left /dev 0700 on this machine, and every
    other user's /dev/null with it. A folder Docktor names itself (state/, local/) is tightened."""
    chosen, own = home / "chosen", home / "state"
    for d in (chosen, own):
        d.mkdir()
        d.chmod(0o755)  # what an older Docktor left
    private_dir(chosen)
    assert mode(chosen) == 0o755 and readable_by_others(chosen)
    private_dir(own, tighten=True)
    assert mode(own) == 0o700 and not readable_by_others(own)


def test_without_create_an_absent_folder_is_an_error_and_is_not_made(home: Path) -> None:
    with pytest.raises(FileNotFoundError):
        private_dir(home / "absent", create=False)
    assert not (home / "absent").exists()


def test_a_symbolic_link_to_a_folder_is_refused(home: Path) -> None:
    target = home / "real"
    target.mkdir(mode=0o700)
    link = home / "state"
    link.symlink_to(target)
    with pytest.raises(UnsafePath, match="is a symbolic link"):
        private_dir(link, what="state_dir")


def test_a_file_where_the_folder_should_be_is_refused(home: Path) -> None:
    (home / "state").write_text("not a folder")
    with pytest.raises(UnsafePath, match="is not a folder"):
        private_dir(home / "state")


def test_a_folder_owned_by_another_user_is_refused(home: Path) -> None:
    d = home / "state"
    d.mkdir(mode=0o700)
    give_to_nobody(d)
    with pytest.raises(UnsafePath, match=r"owned by nobody \(uid 65534\)"):
        private_dir(d, what="state_dir")
    assert mode(d) == 0o700  # refused, not "fixed"


@pytest.mark.parametrize(("bits", "who"), [(0o770, "its group"), (0o707, "others"), (0o777, "group and others")])
def test_a_folder_of_ours_that_others_can_write_is_refused(home: Path, bits: int, who: str) -> None:
    d = home / "state"
    d.mkdir()
    d.chmod(bits)
    with pytest.raises(UnsafePath, match=f"writable by {who}") as info:
        private_dir(d)
    assert "chmod 700" in str(info.value)
    assert mode(d) == bits  # its content may be another user's: not tightened behind the user's back


def test_a_folder_above_that_others_can_write_and_is_not_sticky_is_refused(home: Path) -> None:
    shared = home / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # anyone may rename what is in it: our folder could be swapped
    with pytest.raises(UnsafePath, match="writable by other users .* and not sticky"):
        private_dir(shared / "state")
    assert not (shared / "state").exists()


def test_a_sticky_folder_above_is_fine_like_tmp(home: Path) -> None:
    shared = home / "shared"
    shared.mkdir()
    shared.chmod(0o1777)  # /tmp: only an entry's owner may rename or remove it
    assert mode(private_dir(shared / "state")) == 0o700


def test_a_folder_above_owned_by_another_user_is_refused(home: Path) -> None:
    theirs = home / "theirs"
    theirs.mkdir(mode=0o755)
    give_to_nobody(theirs)
    with pytest.raises(UnsafePath, match=r"\(above .*\) is owned by nobody"):
        private_dir(theirs / "state")


# --------------------------------------------------------------------------- files


def test_a_new_file_is_created_0600(home: Path) -> None:
    path = home / "f"
    fd = open_private(path, os.O_WRONLY, create=True)
    os.close(fd)
    assert mode(path) == 0o600


def test_an_existing_0644_file_of_ours_is_tightened_to_0600(home: Path) -> None:
    path = home / "f"
    path.write_text("old")
    path.chmod(0o644)
    assert read_private(path) == b"old"
    assert mode(path) == 0o600


def test_an_absent_file_reads_as_none(home: Path) -> None:
    assert read_private(home / "absent") is None
    with pytest.raises(FileNotFoundError):
        open_private(home / "absent")


def test_a_symbolic_link_to_a_file_is_refused_and_not_followed(home: Path) -> None:
    victim = home / "victim"
    victim.write_text("precious")
    victim.chmod(0o600)
    link = home / "docktor.pid"
    link.symlink_to(victim)  # planted: docktor.pid -> a file the daemon must not write
    with pytest.raises(UnsafePath, match="is a symbolic link"):
        open_private(link, os.O_WRONLY | os.O_TRUNC, create=True)
    with pytest.raises(UnsafePath, match="is a symbolic link"):
        read_private(link)
    assert victim.read_text() == "precious"


def test_a_file_owned_by_another_user_is_refused(home: Path) -> None:
    path = home / "local.json"
    path.write_text('{"pid": 1}')
    path.chmod(0o600)
    give_to_nobody(path)  # forged by another user
    with pytest.raises(UnsafePath, match=r"owned by nobody \(uid 65534\)"):
        read_private(path)


@pytest.mark.parametrize("bits", [0o620, 0o602, 0o666])
def test_a_file_of_ours_that_others_can_write_is_refused(home: Path, bits: int) -> None:
    path = home / "f"
    path.write_text("x")
    path.chmod(bits)
    with pytest.raises(UnsafePath, match="writable by") as info:
        read_private(path)
    assert "chmod 600" in str(info.value)


def test_what_is_not_a_regular_file_is_refused(home: Path) -> None:
    fifo = home / "fifo"
    os.mkfifo(fifo, 0o600)
    with pytest.raises(UnsafePath, match="not a regular file"):
        open_private(fifo, os.O_RDONLY | os.O_NONBLOCK)


# --------------------------------------------------------------------------- atomic replacement


def test_write_atomic_replaces_the_content_0600_and_leaves_no_temporary_file(home: Path) -> None:
    path = home / "status.json"
    path.write_text("old")
    path.chmod(0o644)
    write_atomic(path, b"new")
    assert path.read_bytes() == b"new"
    assert mode(path) == 0o600
    assert sorted(p.name for p in home.iterdir()) == ["status.json"]


def test_write_atomic_replaces_a_link_at_the_destination_and_never_follows_it(home: Path) -> None:
    victim = home / "victim"
    victim.write_text("precious")
    path = home / "status.json"
    path.symlink_to(victim)
    write_atomic(path, b"ours")
    assert not path.is_symlink() and path.read_bytes() == b"ours"
    assert victim.read_text() == "precious"


def test_write_atomic_on_a_full_disk_leaves_the_old_content(disk: SmallDisk) -> None:
    path = disk.path / "state.json"
    write_atomic(path, b"old content")
    disk.fill()  # a real file system with no space left
    with pytest.raises(OSError) as info:
        write_atomic(path, b"x" * 256 * 1024)
    assert info.value.errno in (28, 122)  # ENOSPC, or EDQUOT on a quota
    disk.free()
    assert path.read_bytes() == b"old content"
    assert sorted(p.name for p in disk.path.iterdir() if p.name.startswith(".state.json")) == []  # no temporary file left
