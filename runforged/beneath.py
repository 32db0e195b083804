"""Opening files beneath a directory without following a symlink anywhere on the way.

A workspace is untrusted ground: a trainer, a cloned repository or another process may
plant a symlink or a FIFO at any path the daemon uses. Every path below the workspace is
therefore opened relative to an open directory with the kernel's ``openat2`` and
``RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS``: a symlink in any component is ``ELOOP``, a
``..`` that would climb out is ``EXDEV``, and the check and the open are one system
call, so nothing can be swapped in between. Where the kernel has no ``openat2`` (Linux
before 5.6, or a sandbox that filters it) the same rule is kept by walking the path one
component at a time, each opened with ``O_NOFOLLOW`` relative to the previous one.

Files are opened non-blocking (a FIFO cannot hold a thread), and readers accept regular
files only, up to a size cap.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import secrets
import stat
from collections.abc import Iterator

_SYS_OPENAT2 = 437  # the same number on every Linux architecture
_RESOLVE_NO_SYMLINKS = 0x04
_RESOLVE_BENEATH = 0x08


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long
_openat2_works: bool | None = None  # None: not tried yet


def _openat2(dir_fd: int, path: str, flags: int, mode: int) -> int:
    how = _OpenHow(
        flags, mode if flags & os.O_CREAT else 0, _RESOLVE_BENEATH | _RESOLVE_NO_SYMLINKS
    )
    fd = _syscall(
        _SYS_OPENAT2,
        ctypes.c_int(dir_fd),
        os.fsencode(path),
        ctypes.byref(how),
        ctypes.c_size_t(ctypes.sizeof(how)),
    )
    if fd < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), path)
    return int(fd)


def _walk(dir_fd: int, path: str, flags: int, mode: int) -> int:
    """The fallback: one component at a time, each with O_NOFOLLOW."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if not parts or ".." in parts or path.startswith("/"):
        raise OSError(errno.EXDEV, "path leaves the directory", path)
    current = dir_fd
    try:
        for part in parts[:-1]:
            step = _open_component(
                current, part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, 0
            )
            if current != dir_fd:
                os.close(current)
            current = step
        return _open_component(current, parts[-1], flags | os.O_NOFOLLOW, mode)
    finally:
        if current != dir_fd:
            os.close(current)


def _open_component(dir_fd: int, name: str, flags: int, mode: int) -> int:
    try:
        return os.open(name, flags, mode, dir_fd=dir_fd)
    except NotADirectoryError:
        _symlink_is_eloop(dir_fd, name)
        raise


def open_beneath(dir_fd: int, path: str, flags: int, mode: int = 0o644) -> int:
    """Open ``path`` (relative) beneath the open directory ``dir_fd``, following no symlink
    (``ELOOP``) and never leaving it (``EXDEV``); raises OSError."""
    global _openat2_works
    flags |= os.O_CLOEXEC | os.O_NOFOLLOW
    if _openat2_works is not False:
        try:
            fd = _openat2(dir_fd, path, flags, mode)
        except NotADirectoryError:
            _symlink_is_eloop(dir_fd, path)
            raise
        except OSError as exc:
            if exc.errno not in (errno.ENOSYS, errno.EPERM) or _openat2_works:
                raise
            _openat2_works = False  # no openat2 here: walk from now on
        else:
            _openat2_works = True
            return fd
    return _walk(dir_fd, path, flags, mode)


def _symlink_is_eloop(dir_fd: int, path: str) -> None:
    """O_DIRECTORY | O_NOFOLLOW on a final symlink says ENOTDIR: say ELOOP, as for a
    symlink anywhere else on the way."""
    try:
        is_link = stat.S_ISLNK(os.stat(path, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return
    if is_link:
        raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path) from None


def open_root(path: str | os.PathLike[str]) -> int:
    """An open directory to resolve beneath: the workspace itself (its own path may be or
    contain symlinks: trust is judged on the resolved path)."""
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


@contextlib.contextmanager
def opened(fd: int) -> Iterator[int]:
    try:
        yield fd
    finally:
        os.close(fd)


def open_dir(dir_fd: int, path: str, *, create: bool = False) -> int:
    """The directory ``path`` beneath ``dir_fd``; with ``create``, missing components are
    made (mode 0755 less the umask) one at a time, never through a symlink."""
    flags = os.O_RDONLY | os.O_DIRECTORY
    try:
        return open_beneath(dir_fd, path, flags)
    except FileNotFoundError:
        if not create:
            raise
    parts = [p for p in path.split("/") if p not in ("", ".")]
    current = os.dup(dir_fd)
    try:
        for part in parts:
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, 0o755, dir_fd=current)
            step = open_beneath(current, part, flags)
            os.close(current)
            current = step
    except BaseException:
        os.close(current)
        raise
    return current


class NotRegularFile(OSError):
    """A FIFO, socket, device or directory where a regular file was expected."""


class FileTooLarge(OSError):
    """A file over the size cap of its kind."""


def read_regular(dir_fd: int, path: str, max_bytes: int) -> tuple[bytes, os.stat_result]:
    """The whole regular file ``path`` beneath ``dir_fd`` (at most ``max_bytes``) and its
    status; raises OSError (``NotRegularFile``, ``FileTooLarge`` included)."""
    fd = _open_no_atime(dir_fd, path)
    try:
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):
            raise NotRegularFile(errno.EINVAL, "not a regular file", path)
        if status.st_size > max_bytes:
            raise FileTooLarge(errno.EFBIG, f"larger than {max_bytes} bytes", path)
        # One read of one byte more than the size: a regular file reads short only at its
        # end, so a short read needs no second read to see the end.
        want = status.st_size + 1
        data = os.read(fd, want)
        if len(data) < want:
            return data, status
        chunks = [data]
        size = len(data)
        while chunk := os.read(fd, 1 << 16):  # it grew while being read
            size += len(chunk)
            if size > max_bytes:
                raise FileTooLarge(errno.EFBIG, f"larger than {max_bytes} bytes", path)
            chunks.append(chunk)
        return b"".join(chunks), status
    finally:
        os.close(fd)


_NO_ATIME = getattr(os, "O_NOATIME", 0)  # Linux only


def _open_no_atime(dir_fd: int, path: str) -> int:
    flags = os.O_RDONLY | os.O_NONBLOCK
    if _NO_ATIME:
        # No access-time update: reading a file the first time after it was written would
        # otherwise write its inode back. Only the file's owner may ask for that.
        try:
            return open_beneath(dir_fd, path, flags | _NO_ATIME)
        except PermissionError as exc:
            if exc.errno != errno.EPERM:
                raise
    return open_beneath(dir_fd, path, flags)


def open_regular_for_reading(dir_fd: int, path: str) -> int:
    """An open regular file (never a FIFO) beneath ``dir_fd``, for streaming reads."""
    fd = open_beneath(dir_fd, path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotRegularFile(errno.EINVAL, "not a regular file", path)
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_atomic(dir_fd: int, name: str, data: bytes, mode: int = 0o644) -> None:
    """Replace ``name`` in the open directory ``dir_fd`` atomically: a temp file in the
    same directory, fsync, rename over the name (a symlink there is replaced, never
    followed), fsync the directory. Raises OSError; the temp file is removed on failure."""
    temp = f".{name}.tmp-{secrets.token_hex(4)}"
    fd = os.open(
        temp,
        os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
        mode,
        dir_fd=dir_fd,
    )
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp, dir_fd=dir_fd)
        raise
    os.fsync(dir_fd)


def symlink_on_the_way(dir_fd: int, path: str) -> str | None:
    """The first component of ``path`` beneath ``dir_fd`` that is a symlink (for error
    messages after an ``ELOOP``), or None."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    for end in range(1, len(parts) + 1):
        prefix = "/".join(parts[:end])
        try:
            if stat.S_ISLNK(os.stat(prefix, dir_fd=dir_fd, follow_symlinks=False).st_mode):
                return prefix
        except OSError:
            return None
    return None
