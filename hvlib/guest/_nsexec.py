"""Helper program: enter a container's namespaces and run one command there.

Run by :mod:`hvlib.guest.container` as a fresh process (``python -I -S _nsexec.py STATUS_FD NS_FDS
-- ARGV...``), never imported by hvlib: hvlib's own process has libvirt's event-loop thread, so no
Python code may run there between ``fork`` and ``exec``. This program is single-threaded and imports
only the standard library, all of it before entering the container (the host's Python library is not
visible in the container's mount namespace: no import may happen after setns).

Steps: ``setns`` into each namespace descriptor it inherited (in the order given; the user
namespace of a container without an id map refuses with EINVAL and is skipped; once in a user
namespace, it takes that namespace's uid and gid 0), ``chdir`` to
``/root`` (or ``/``) of the container, fork once more so the command is inside the container's
PID namespace, ``setsid`` there (the command leads its own process group) and ``exec`` the
command with a clean environment. Joining the mount namespace also sets the root directory to
that namespace's root, which is the container's root filesystem.

Reports on STATUS_FD: ``pid N`` once the command is forked, ``killed N`` when it killed the
group, ``error TEXT`` when it could not enter the container (then it exits 125); TEXT names
the step that failed (``setns(mnt)``, ``setresuid(0)``, ``chdir('/root')``). Exits with the
command's status, or 128+N when a signal N ended it. SIGTERM, SIGINT or SIGHUP (or the death of
the thread that started it) make it SIGKILL the command's whole process group. If the command
cannot be executed, its stderr says why and the status is 127 (not found) or 126.

It must not: touch anything outside the namespaces it was handed, print on stdout or stderr
itself (both belong to the command), or outlive the command.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import signal
import sys

SETUP_FAILED = 125
PR_SET_PDEATHSIG = 1
ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "container": "lxc-libvirt",
}
_libc = ctypes.CDLL(None, use_errno=True)
_child: list[int] = []
_stop: list[int] = []
_status_fd = -1


def report(line: str) -> None:
    """Write one line to the status descriptor (never fails)."""
    with contextlib.suppress(OSError):
        os.write(_status_fd, (line + "\n").encode())


def ns_kind(fd: int) -> str:
    """``net``, ``mnt``, ``user``, ... for a namespace descriptor."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}").split(":", 1)[0]
    except OSError:
        return "?"


def enter(fds: list[int]) -> None:
    """setns into every descriptor, skipping a user namespace that refuses with EINVAL.

    Raises:
        OSError: a setns failed.
    """
    joined_user = False
    for fd in fds:
        kind = ns_kind(fd)
        if _libc.setns(fd, 0) != 0:
            err = ctypes.get_errno()
            if not (err == errno.EINVAL and kind == "user"):
                raise OSError(err, f"setns({kind}): {os.strerror(err)}")
        else:
            joined_user = joined_user or kind == "user"
        os.close(fd)
    if joined_user:
        try:
            become_root()
        except OSError as e:
            raise OSError(e.errno, f"setresuid(0) in its user namespace: {e.strerror}") from e


def become_root() -> None:
    """Take the container's uid and gid 0 (and no supplementary groups).

    In a container with an id map, the host's uid 0 is not mapped: without this the command
    would run as the overflow uid (``nobody``) and its files would belong to the host's root.

    Raises:
        OSError: the container's user namespace refused.
    """
    os.setgroups([])
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)


def go_home() -> None:
    """chdir to the container's ``/root`` (or ``/`` if it has none).

    Raises:
        OSError: the chdir failed; its text names the step, the directory, its owner and mode
            (a root filesystem not shifted for the id map shows the host's uid there).
    """
    home = "/root" if os.path.isdir("/root") else "/"
    try:
        os.chdir(home)
    except OSError as e:
        raise OSError(e.errno, f"chdir({home!r}) failed: {e.strerror}{owner(home)}") from e


def owner(path: str) -> str:
    """`` (PATH belongs to uid U, mode 0700; ... uid V)`` for a message ('' if unreadable)."""
    try:
        st = os.stat(path)
    except OSError:
        return ""
    mode = st.st_mode & 0o7777
    return (
        f" ({path} belongs to uid {st.st_uid}, mode {mode:04o}; "
        f"the command would run as uid {os.getuid()})"
    )


def kill_group(_signum: int = 0, _frame: object = None) -> None:
    """Signal handler: SIGKILL the command's process group."""
    _stop.append(1)
    for pid in _child:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:  # not yet its own group leader (between fork and setsid)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
        report(f"killed {pid}")


def child(argv: list[str]) -> None:
    """In the forked command process: own session, default signals, exec (never returns)."""
    try:
        os.setsid()
        _libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL))
        for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        execvpe(argv)
    except OSError as e:
        code = 127 if e.errno == errno.ENOENT else 126
        os.write(2, f"hvlib: cannot execute {argv[0]!r}: {e.strerror}\n".encode())
        os._exit(code)
    except BaseException as e:
        os.write(2, f"hvlib: cannot start {argv[0]!r}: {e!r}\n".encode())
        os._exit(SETUP_FAILED)


def execvpe(argv: list[str]) -> None:
    """``execve`` argv[0] looked up on ENV's PATH (done by hand: ``os.execvpe`` imports
    modules lazily, and the host's Python library is not visible inside the container).

    Raises:
        OSError: no candidate could be executed (the most telling error).
    """
    if "/" in argv[0]:
        os.execve(argv[0], argv, ENV)
    error: OSError = FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), argv[0])
    for directory in ENV["PATH"].split(":"):
        try:
            os.execve(f"{directory}/{argv[0]}", argv, ENV)
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as e:  # e.g. EACCES: remember it, keep looking (as execvp does)
            error = e
    raise error


def wait(pid: int) -> int:
    """Wait for the command; its exit status (128+N for signal N)."""
    while True:
        try:
            _, status = os.waitpid(pid, 0)
        except ChildProcessError:
            return SETUP_FAILED
        if os.WIFEXITED(status) or os.WIFSIGNALED(status):
            code = os.waitstatus_to_exitcode(status)
            return code if code >= 0 else 128 - code


def quiet_stdio() -> None:
    """Give our own stdin/stdout/stderr up: only the command holds the pipes."""
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)


def main(argv: list[str]) -> int:
    global _status_fd
    _status_fd = int(argv[1])
    os.set_inheritable(_status_fd, False)
    fds = [int(x) for x in argv[2].split(",") if x]
    command = argv[4:]
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, kill_group)
    _libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM))
    if argv[3] != "--" or not command:
        report("error usage: _nsexec.py STATUS_FD NS_FDS -- ARGV...")
        return SETUP_FAILED
    try:
        enter(fds)
    except OSError as e:
        report(f"error cannot enter the container: {e.strerror or e}")
        return SETUP_FAILED
    try:
        go_home()
    except OSError as e:
        report(f"error entered the container, but {e.strerror or e}")
        return SETUP_FAILED
    pid = os.fork()
    if pid == 0:
        child(command)
    _child.append(pid)
    report(f"pid {pid}")
    if _stop:
        kill_group()
    quiet_stdio()
    return wait(pid)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
