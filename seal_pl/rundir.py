"""Run directories that concurrent and interrupted runs cannot spoil (plain Python, no Lightning).

Three guarantees, used by ``seal fit|validate|test|predict`` (:mod:`seal_pl.cli`) and ``seal
restem`` (:mod:`seal_pl.restem.runner`):

* **One run per directory.** A run takes ``<run_dir>/.lock``, created with ``O_CREAT | O_EXCL``
  and holding the owner's pid, host, start time and command. A second run on that directory (or on
  one inside it, such as a stage of a running ``seal restem``) is refused with
  :class:`RunDirLockedError`, which names the holder and what to do. The processes a run starts
  itself share its lock instead of taking one: the DDP ranks (``RANK``/``LOCAL_RANK``/``NODE_RANK``/
  ``SLURM_PROCID`` above 0 neither take nor check a lock), the stages ``seal restem`` runs in its own
  process (same pid) and the ``python -m seal_pl`` stage commands it starts (the owner's pid is
  exported as ``$SEAL_LOCK_PID``, which they inherit). A lock whose process is gone (same host, and
  the pid is no longer alive, or now belongs to a process with another start time, or the machine
  was restarted) is stale: it is taken over with a logged warning. A lock from another host is
  never taken over (its process cannot be checked from here). The lock is released when the
  command ends, also on an error or a stop.
* **Atomic files.** :func:`write_text_atomic` writes a temporary file in the same directory,
  fsyncs it and renames it over the target: a kill mid-write leaves the old file or the new one,
  never a partial one (``config.yaml``, from which a run resumes, is written this way).
* **Resumable stops.** Inside :func:`command_scope` (the lifetime of one ``seal`` command),
  SIGTERM and SIGINT (Ctrl-C) stop the run: at once, or, while an item is processed (between
  :func:`begin_item` and :func:`end_item`), when it is finished, so that its records are kept. A
  second Ctrl-C abandons the item in progress (the records already appended stay; readers skip a
  half-written last line). The command then exits with 128 + the signal number (143 for SIGTERM,
  130 for SIGINT) and prints one line saying that the run is resumable and the command that
  resumes it. :func:`forwarding_stops` passes the signals on to a child command instead (``seal
  restem``'s stage subprocesses), so that the child stops the same way and the parent after it.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import json
import logging
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, MutableMapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from seal_pl.errors import UserError

log = logging.getLogger(__name__)

LOCK_NAME = ".lock"
"""The lock file of a run directory."""

LOCK_PID_ENV = "SEAL_LOCK_PID"
"""The pid of the process that holds the run's lock; the processes it starts inherit it."""

RANK_ENVS = ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID")
"""Environment variables of distributed launchers (Lightning, torchrun, SLURM) that number a process."""

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
"""The signals that stop a run so that it can be resumed."""

TERMINAL_SIGNALS = (signal.SIGHUP, signal.SIGQUIT)
"""Other signals a terminal sends to its foreground processes; passed on to a stage subprocess."""

UNREADABLE_LOCK_SECONDS = 10.0
"""A lock file that still does not parse after this many seconds is stale (its writer was killed)."""


class RunDirLockedError(UserError, RuntimeError):
    """The run directory is in use by another run (the message names the process holding it)."""


class RunStopped(SystemExit):
    """A run stopped by SIGTERM or SIGINT; the exit status is 128 + the signal number."""

    def __init__(self, signum: int):
        super().__init__(128 + signum)
        self.signum = signum


# ------------------------------------------------------------------------------------- files
def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically: temp file in the same directory, fsync, rename.

    A failure or a kill at any point leaves either the previous file or the complete new one, and
    no temporary file behind (except after a kill, a ``.<name>.*.tmp`` that nothing reads).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (where the platform allows opening a directory)."""
    with contextlib.suppress(OSError):
        descriptor = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


# -------------------------------------------------------------------------------------- lock
HOST = socket.gethostname()


def _process_start(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot, Linux), to tell a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()  # the command name may contain spaces
    return int(fields[19]) if len(fields) > 19 else None


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


@dataclass(frozen=True)
class LockInfo:
    """What a lock file says about the process holding it."""

    pid: int
    host: str
    started: str
    command: str
    process_start: int | None = None
    boot_id: str | None = None
    seal_lock: int = 1

    @classmethod
    def of_this_process(cls, command: str) -> LockInfo:
        return cls(
            pid=os.getpid(),
            host=HOST,
            started=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            command=command,
            process_start=_process_start(os.getpid()),
            boot_id=_boot_id(),
        )

    @classmethod
    def parse(cls, text: str) -> LockInfo | None:
        """The lock described by ``text``; ``None`` if it is not (or not yet) a seal lock file."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            return None
        if not isinstance(data, dict) or data.get("seal_lock") != 1:
            return None
        if not isinstance(data.get("pid"), int) or not isinstance(data.get("host"), str):
            return None
        return cls(**{key: data.get(key) for key in cls.__dataclass_fields__})

    def to_text(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    def is_this_process(self) -> bool:
        return self.host == HOST and self.pid == os.getpid() and self.process_start == _process_start(os.getpid())

    def alive(self) -> bool | None:
        """Whether the holder still runs; ``None`` when it runs on another host (unknowable here)."""
        if self.host != HOST:
            return None
        if self.boot_id is not None and _boot_id() is not None and self.boot_id != _boot_id():
            return False  # the machine was restarted since
        if not _pid_alive(self.pid):
            return False
        now = _process_start(self.pid)
        return self.process_start is None or now is None or now == self.process_start

    def describe(self) -> str:
        return f"pid {self.pid} on host {self.host}, running `{self.command}` since {self.started}"


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (IsADirectoryError, NotADirectoryError, UnicodeDecodeError):
        return ""


def _locked_error(run_dir: Path, lock_path: Path, holder: LockInfo) -> RunDirLockedError:
    where = "" if lock_path.parent == run_dir else f" (it lies inside {lock_path.parent}, locked by that run)"
    if holder.host == HOST:
        gone = f"stop it (kill {holder.pid}: a stopped run resumes with the same command)"
    else:
        gone = f"if that process is gone (a crashed machine), delete {lock_path}"
    return RunDirLockedError(
        f"the run directory {run_dir} is in use by another run{where}: {holder.describe()} (lock file "
        f"{lock_path}). Two runs writing one directory would spoil it. Wait for that run to finish, "
        f"{gone}, or choose another --run_dir."
    )


def is_secondary_rank(env: MutableMapping[str, str] | None = None) -> bool:
    """Whether this process is a rank above 0 started by a distributed launcher (it takes no lock)."""
    env = os.environ if env is None else env
    for key in RANK_ENVS:
        try:
            if int(env.get(key) or 0) > 0:
                return True
        except ValueError:
            continue
    return False


@dataclass
class RunDirLock:
    """The lock this process holds on a run directory; :meth:`release` removes it (once)."""

    path: Path
    info: LockInfo
    env: MutableMapping[str, str] = field(repr=False)
    previous_env: str | None = None
    released: bool = False

    def release(self) -> None:
        """Remove the lock file (if it is still this lock's) and restore ``$SEAL_LOCK_PID``."""
        if self.released:
            return
        self.released = True
        if LockInfo.parse(_read_text(self.path) or "") == self.info:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        if self.env.get(LOCK_PID_ENV) == str(self.info.pid):
            if self.previous_env is None:
                self.env.pop(LOCK_PID_ENV, None)
            else:
                self.env[LOCK_PID_ENV] = self.previous_env


def lock_run_dir(
    run_dir: str | Path, command: str | None = None, env: MutableMapping[str, str] | None = None
) -> RunDirLock | None:
    """Lock ``run_dir`` for this command; ``None`` where the lock of the run that started us covers it.

    Refuses (:class:`RunDirLockedError`) when a live process of another run holds a lock on
    ``run_dir`` or on a directory above it. Returns ``None`` without locking for a secondary DDP
    rank, and where the covering lock is this process's own (an in-process ``seal restem`` stage)
    or its parent's (``$SEAL_LOCK_PID``: a stage subprocess, a DDP rank). Otherwise creates the
    lock, taking over a stale one, exports ``$SEAL_LOCK_PID`` for the processes this run starts,
    and registers the lock to be released when the command ends (:func:`command_scope`, or at exit).
    """
    env = os.environ if env is None else env
    if is_secondary_rank(env):
        return None
    run_dir = Path(run_dir).absolute()
    if run_dir.exists() and not run_dir.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "not a directory", str(run_dir))
    try:
        parent_pid = int(env.get(LOCK_PID_ENV) or 0)
    except ValueError:
        parent_pid = 0
    covered = False
    for directory in (run_dir, *run_dir.parents):
        lock_path = directory / LOCK_NAME
        holder = LockInfo.parse(_read_text(lock_path) or "")
        if holder is None:
            continue
        if holder.is_this_process() or (holder.host == HOST and holder.pid == parent_pid):
            covered = True
        elif holder.alive() is not False:
            raise _locked_error(run_dir, lock_path, holder)
    if covered:
        return None
    lock = _create_lock(run_dir, LockInfo.of_this_process(command or current_command()), env)
    env[LOCK_PID_ENV] = str(os.getpid())
    scope = _COMMAND
    if scope is not None:
        scope.locks.append(lock)
        scope.run_dir = scope.run_dir or run_dir
    else:
        atexit.register(lock.release)
    return lock


def _create_lock(run_dir: Path, info: LockInfo, env: MutableMapping[str, str]) -> RunDirLock:
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_NAME
    first_unreadable: float | None = None
    while True:
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            seen = _read_text(path)
            if seen is None:  # released meanwhile: try again
                continue
            holder = LockInfo.parse(seen)
            if holder is None:
                # Just created by another run that is still writing it, or left unwritten by a kill.
                first_unreadable = first_unreadable or time.monotonic()
                if time.monotonic() - first_unreadable < UNREADABLE_LOCK_SECONDS:
                    time.sleep(0.1)
                    continue
            elif holder.alive() is not False:
                raise _locked_error(run_dir, path, holder) from None
            if _remove_stale(path, seen):
                what = "an unreadable lock" if holder is None else f"a stale lock of {holder.describe()}"
                log.warning("%s: taking over %s (that process is gone)", run_dir, what)
            first_unreadable = None
            continue
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(info.to_text())
            handle.flush()
            os.fsync(handle.fileno())
        return RunDirLock(path=path, info=info, env=env, previous_env=env.get(LOCK_PID_ENV))


def _remove_stale(path: Path, seen: str) -> bool:
    """Remove the stale lock whose text was ``seen``; False if another run replaced it meanwhile.

    The lock is first renamed aside (atomic), so that of two runs taking over at once only one
    removes it; a fresh lock moved aside by mistake is put back.
    """
    aside = path.with_name(f"{path.name}.stale.{os.getpid()}")
    try:
        os.replace(path, aside)
    except FileNotFoundError:
        return False
    try:
        if _read_text(aside) == seen:
            return True
        with contextlib.suppress(FileExistsError):
            os.link(aside, path)
        return False
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(aside)


# ------------------------------------------------------------------------------------- stops
@dataclass
class _Stops:
    """The stop requested in this process, and whether an item is being processed."""

    requested: int | None = None
    in_item: bool = False
    raised: bool = False


_STOPS = _Stops()


def _notice(text: str) -> None:
    """One line on stderr, safe inside a signal handler."""
    with contextlib.suppress(OSError):
        os.write(2, f"seal: {text}\n".encode())


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


def _on_signal(signum: int, frame: FrameType | None) -> None:
    if _STOPS.raised:  # already stopping: let the clean-up run
        return
    again = _STOPS.requested is not None
    if not again:
        _STOPS.requested = signum
    if _STOPS.in_item and not (again and signum == signal.SIGINT):
        if not again:
            press = "press Ctrl-C again" if signum == signal.SIGINT else "press Ctrl-C"
            _notice(
                f"{signal_name(signum)} received: finishing the item in progress, then stopping "
                f"({press} to stop at once, abandoning it)"
            )
        return
    _STOPS.raised = True
    raise RunStopped(signum)


def stop_requested() -> int | None:
    """The signal that asked this process to stop, if any."""
    return _STOPS.requested


def raise_if_stopped(signum: int | None = None) -> None:
    """Raise :class:`RunStopped` if a stop was requested (or ``signum`` is given)."""
    signum = _STOPS.requested if signum is None else signum
    if signum is not None:
        _STOPS.raised = True
        raise RunStopped(signum)


def stop_signal_of(returncode: int) -> int | None:
    """The stop signal a child command ended by (exit status 128 + signal, or killed by it), if any."""
    for signum in STOP_SIGNALS:
        if returncode in (128 + signum, -signum):
            return signum
    return None


def begin_item() -> None:
    """An item starts: a stop requested from now on waits until :func:`end_item`."""
    raise_if_stopped()
    _STOPS.in_item = True


def end_item() -> None:
    """The item is finished (its records written): stop now if a stop was requested meanwhile."""
    _STOPS.in_item = False
    raise_if_stopped()


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _install(handler) -> dict[int, Any]:
    """Install ``handler`` for the stop signals (main thread only); returns the previous handlers."""
    if not _main_thread():
        return {}
    return {signum: signal.signal(signum, handler) for signum in STOP_SIGNALS}


def _restore(previous: dict[int, Any]) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler if handler is not None else signal.SIG_DFL)


@contextlib.contextmanager
def forwarding_stops(process: subprocess.Popen, *, own_group: bool) -> Iterator[None]:
    """While ``process`` runs: pass SIGTERM and SIGINT on to it and remember them, without stopping.

    SIGTERM goes to the child's main process once (a Lightning launcher passes it on to its
    ranks); SIGINT goes to the child's whole process group (``own_group``: started with
    ``process_group=0``), as a terminal would send it, every time (a second one stops at once).
    With ``own_group``, a hang-up or quit (SIGHUP, SIGQUIT, where not ignored) is passed on to the
    group too and then ends this process, as it would have reached both from the terminal.
    After the block, :func:`stop_requested` tells whether the caller should stop too.
    """
    sent_term = False

    def forward(signum: int, frame: FrameType | None) -> None:
        nonlocal sent_term
        if _STOPS.requested is None:
            _STOPS.requested = signum
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if signum == signal.SIGINT and own_group:
                os.killpg(process.pid, signal.SIGINT)
            elif signum == signal.SIGINT:
                process.send_signal(signal.SIGINT)
            elif not sent_term:
                sent_term = True
                process.send_signal(signal.SIGTERM)
        _notice(f"{signal_name(signum)} passed on to the running stage (pid {process.pid}); waiting for it to stop")

    def hang_up(signum: int, frame: FrameType | None) -> None:
        # The stage is out of the terminal's process group: give it the terminal's signal, then
        # end as this process would have without a handler.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signum)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    previous = _install(forward)
    if own_group and previous:
        for signum in TERMINAL_SIGNALS:
            if signal.getsignal(signum) is signal.SIG_DFL:
                previous[signum] = signal.signal(signum, hang_up)
    try:
        yield
    finally:
        _restore(previous)


# ----------------------------------------------------------------------------------- command
@dataclass
class _Command:
    """The ``seal`` command running in this process: its arguments, run directory and locks."""

    argv: list[str]
    program: str
    reports: bool
    run_dir: Path | None = None
    locks: list[RunDirLock] = field(default_factory=list)


_COMMAND: _Command | None = None


def program_name() -> str:
    """How this command was started: ``<python> -m seal_pl`` (the stage commands), or ``seal``."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and spec.name in ("seal_pl", "seal_pl.__main__"):
        return f"{shlex.quote(sys.executable)} -m seal_pl"
    return "seal"


def _given_run_dir(argv: list[str]) -> bool:
    return any(arg == "--run_dir" or arg.startswith("--run_dir=") for arg in argv)


def current_command() -> str:
    """The command line of the running ``seal`` command (``sys.argv`` outside :func:`command_scope`)."""
    program, argv = (program_name(), sys.argv[1:]) if _COMMAND is None else (_COMMAND.program, _COMMAND.argv)
    return f"{program} {shlex.join(argv)}" if argv else program


def resume_command() -> str:
    """The command that resumes the running command: the same one, with ``--run_dir`` made explicit."""
    command = current_command()
    if _COMMAND is not None and _COMMAND.run_dir is not None and not _given_run_dir(_COMMAND.argv):
        command += f" --run_dir {shlex.quote(str(_COMMAND.run_dir))}"
    return command


@contextlib.contextmanager
def command_scope(argv: list[str], program: str | None = None) -> Iterator[None]:
    """The lifetime of one ``seal`` command in this process.

    Installs the stop handlers (SIGTERM, SIGINT), releases the run-directory locks taken inside
    at the end, and turns :class:`RunStopped` into exit status 128 + signal with the one-line resume
    message (not printed by DDP ranks above 0 nor by the stage commands of a ``seal restem``, whose
    parent reports). A command run inside another (``seal restem``'s in-process stages) shares the
    outer scope: its stops reach the outer command unchanged.
    """
    global _COMMAND
    if _COMMAND is not None:
        yield
        return
    reports = not (is_secondary_rank() or os.environ.get(LOCK_PID_ENV))
    command = _Command(argv=list(argv), program=program or program_name(), reports=reports)
    _STOPS.requested, _STOPS.in_item, _STOPS.raised = None, False, False
    previous = _install(_on_signal)
    _COMMAND = command
    try:
        yield
    except RunStopped as stop:
        if command.reports:
            where = f"the run in {command.run_dir}" if command.run_dir is not None else "the run"
            print(
                f"seal: stopped by {signal_name(stop.signum)}; {where} is resumable (finished items are kept); "
                f"to resume, run the same command again: {resume_command()}",
                file=sys.stderr,
                flush=True,
            )
        raise SystemExit(stop.code) from None
    finally:
        _STOPS.raised = True  # a signal from now on would only interrupt the clean-up
        for lock in reversed(command.locks):
            lock.release()
        _COMMAND = None
        _restore(previous)
        _STOPS.requested, _STOPS.in_item, _STOPS.raised = None, False, False


def is_multiprocess(trainer: dict[str, Any]) -> bool:
    """Whether a trainer config asks for more than one process (then a stage runs as its own command)."""
    devices = trainer.get("devices", 1)
    single = devices in (1, "1", None) or (isinstance(devices, list | tuple) and len(devices) == 1)
    strategy = str(trainer.get("strategy") or "auto").lower()  # a name, or a class_path section (DDPStrategy)
    spread = any(word in strategy for word in ("ddp", "fsdp", "deepspeed"))
    return not single or int(trainer.get("num_nodes") or 1) > 1 or spread
