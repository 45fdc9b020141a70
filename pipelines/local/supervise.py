"""Run one step's command so that it dies with the executor, whatever kills the executor.

``runners.run_process`` starts ``python -I -S supervise.py EXECUTOR_PID COMMAND...`` as the leader of a
new session (so of a new process group). This process starts COMMAND in that group and waits for it:

- When the executor dies (even by ``kill -9``, which runs no cleanup), the whole group is killed: the
  step, and whatever the step started (Preprocess's worker pool). On Linux the kernel tells this process
  (``prctl(PR_SET_PDEATHSIG)``, https://man7.org/linux/man-pages/man2/prctl.2.html); elsewhere a thread
  polls ``getppid()`` every ``POLL_S`` seconds. The signal fires when the *thread* that forked this
  process exits: the executor's worker thread, which waits for the step until it ends.
- SIGTERM, SIGINT and SIGHUP (``runners.terminate`` signals the whole group) are the step's to handle:
  this process waits for it, so the executor's grace period and its SIGKILL still apply to the step.
- When the step ends, what it left running in the group gets SIGTERM (a container's processes end with
  its entrypoint), and this process ends as the step did: its exit status, or the signal that killed it
  (the executor tells a failed script from a killed one: ``runners.run_process``).

Standard library only, no site packages (``-I -S``): it starts in milliseconds.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
ORPHANED = signal.SIGUSR1  # what the kernel sends when the executor dies; nothing else sends it here
POLL_S = 0.5  # where prctl is missing: how soon a dead executor is noticed
NOT_STARTED = 127  # a shell's status for a command that cannot be run


def kill_group(*_: object) -> None:
    """SIGKILL to the whole group, this process included: the executor is gone, nobody waits for it."""
    os.killpg(0, signal.SIGKILL)


def _watch_parent(executor_pid: int) -> None:
    while os.getppid() == executor_pid:
        time.sleep(POLL_S)
    kill_group()


def die_with(executor_pid: int) -> None:
    """Kill the group when the executor dies: by the kernel's signal on Linux, else by polling."""
    signal.signal(ORPHANED, kill_group)
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(ORPHANED), 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl failed")
    except (ImportError, OSError, AttributeError):  # no prctl (macOS, Windows): a watchdog thread
        threading.Thread(target=_watch_parent, args=(executor_pid,), daemon=True).start()
    if os.getppid() != executor_pid:  # the executor died before the signal was armed
        kill_group()


def _leave_to_the_step(signum: int, frame: object) -> None:
    """The whole group got this signal; the step decides what it means, and this process waits."""


def lead_own_group() -> None:
    """Make this process the leader of its own group (the executor starts it in a new session), so the
    group it signals is never its starter's."""
    if os.getpgid(0) != os.getpid():
        os.setpgid(0, 0)


def main(argv: list[str]) -> int:
    executor_pid, command = int(argv[0]), argv[1:]
    lead_own_group()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _leave_to_the_step)  # a handler, not SIG_IGN: the step starts with the default
    die_with(executor_pid)
    try:
        # Python ignores SIGPIPE and SIGXFSZ at start-up; the step gets the defaults, as subprocess does.
        pid = os.posix_spawnp(command[0], command, os.environ, setsigdef=(signal.SIGPIPE, signal.SIGXFSZ))
    except OSError as exc:
        print(f"cannot start {command[0]}: {exc.strerror}", file=sys.stderr, flush=True)
        return NOT_STARTED
    _, status = os.waitpid(pid, 0)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    os.killpg(0, signal.SIGTERM)  # what the step left behind; this process ignores it
    if os.WIFSIGNALED(status):  # end as the step ended, so the executor sees the signal
        died_by = os.WTERMSIG(status)
        with contextlib.suppress(OSError, ValueError):  # SIGKILL's disposition cannot be set (or needs to)
            signal.signal(died_by, signal.SIG_DFL)
        os.kill(os.getpid(), died_by)
    return os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
