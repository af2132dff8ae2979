"""Run-directory lock, atomic config writes and resumable stops (SIGTERM, Ctrl-C) of ``seal``."""

from __future__ import annotations

import json
import logging
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from tiny_cli import tiny_knowledge_argv

from seal_pl.cli import RunDirConfig, main
from seal_pl.records import read_records
from seal_pl.restem import runner
from seal_pl.rundir import (
    HOST,
    LOCK_NAME,
    LOCK_PID_ENV,
    RANK_ENVS,
    LockInfo,
    RunDirLockedError,
    RunStopped,
    begin_item,
    command_scope,
    end_item,
    lock_run_dir,
    write_text_atomic,
)

ROOT = Path(__file__).resolve().parents[2]


def tiny_test(run_dir: Path, *extra: str) -> list[str]:
    return tiny_knowledge_argv(run_dir, *extra, new_tokens=12, answer_tokens=6)


RESTEM_CONFIG = """
model: tiny-random-llama
rounds: 1
evaluate_base: false
trainer: {accelerator: cpu, devices: 1, enable_progress_bar: false}
estep:
  model:
    class_path: seal_pl.lightning.KnowledgeIncorporationModule
    init_args: {conditions: [no_adaptation, self_edit]}
  data:
    class_path: seal_pl.lightning.KnowledgeDataModule
    init_args: {path: data/knowledge/train.json, limit: 1}
sft:
  trainer: {max_epochs: 1}
"""


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without a lock owner or a rank: a process as a user would start it."""
    env = {k: v for k, v in os.environ.items() if k not in (LOCK_PID_ENV, *RANK_ENVS)}
    return {**env, "OMP_NUM_THREADS": "1", **extra}


def child(code: str, *args: str, env: dict[str, str] | None = None, **kwargs) -> subprocess.Popen:
    """A Python child process running ``code`` (with ``args`` in ``sys.argv[1:]``)."""
    return subprocess.Popen(
        [sys.executable, "-c", code, *args], cwd=ROOT, env=clean_env() if env is None else env, text=True, **kwargs
    )


HOLD_LOCK = """
import sys
from seal_pl.rundir import lock_run_dir
lock_run_dir(sys.argv[1], command="seal test --run_dir holder")
print("locked", flush=True)
sys.stdin.read()  # until the test closes our stdin; the lock is released at exit
"""


@pytest.fixture
def holder(tmp_path):
    """Another process holding the lock of ``tmp_path / 'run'``."""
    run_dir = tmp_path / "run"
    process = child(HOLD_LOCK, str(run_dir), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert process.stdout.readline().strip() == "locked"
    yield SimpleNamespace(run_dir=run_dir, pid=process.pid)
    process.stdin.close()
    assert process.wait(timeout=60) == 0


@pytest.fixture
def released():
    """Locks taken by the test in this process are released afterwards (and ``$SEAL_LOCK_PID`` restored)."""
    locks = []
    yield locks
    for lock in reversed(locks):
        if lock is not None:
            lock.release()
    assert LOCK_PID_ENV not in os.environ


# -------------------------------------------------------------------------------------- lock
def test_second_run_is_refused_naming_the_holder(holder, tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(tiny_test(holder.run_dir))
    assert stopped.value.code == 2
    err = " ".join(capsys.readouterr().err.split())  # the paragraph is wrapped
    assert "seal: error: the run directory" in err and f"pid {holder.pid} on host {HOST}" in err
    assert "`seal test --run_dir holder`" in err and f"kill {holder.pid}" in err and "another --run_dir" in err

    # seal restem on the same directory, and a stage run inside it, are refused as well.
    config = tmp_path / "restem.yaml"
    config.write_text(RESTEM_CONFIG)
    with pytest.raises(SystemExit) as stopped:
        main(["restem", "--config", str(config), "--run_dir", str(holder.run_dir)])
    assert stopped.value.code == 2 and f"pid {holder.pid}" in " ".join(capsys.readouterr().err.split())
    with pytest.raises(RunDirLockedError, match=f"pid {holder.pid}"):
        lock_run_dir(holder.run_dir / "round_0" / "estep")
    assert not (holder.run_dir / "round_0").exists()


def test_lock_says_who_holds_it_and_is_released_when_its_process_ends(tmp_path):
    run_dir = tmp_path / "run"
    process = child(HOLD_LOCK, str(run_dir), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert process.stdout.readline().strip() == "locked"
    info = LockInfo.parse((run_dir / LOCK_NAME).read_text())
    assert info.pid == process.pid and info.host == HOST and info.command == "seal test --run_dir holder"
    assert info.started and info.alive()
    process.stdin.close()
    assert process.wait(timeout=60) == 0
    assert not (run_dir / LOCK_NAME).exists()


def test_stale_lock_is_taken_over_with_a_warning(tmp_path, caplog, released):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    gone = child("pass")
    gone.wait()
    stale = LockInfo(pid=gone.pid, host=HOST, started="yesterday", command="seal test --run_dir killed")
    (run_dir / LOCK_NAME).write_text(stale.to_text())
    with caplog.at_level(logging.WARNING, logger="seal_pl.rundir"):
        released.append(lock_run_dir(run_dir, command="seal test --run_dir mine"))
    assert f"stale lock of pid {gone.pid}" in caplog.text
    assert LockInfo.parse((run_dir / LOCK_NAME).read_text()).pid == os.getpid()
    assert os.environ[LOCK_PID_ENV] == str(os.getpid())
    released.pop().release()
    assert not (run_dir / LOCK_NAME).exists() and LOCK_PID_ENV not in os.environ
    assert [p.name for p in run_dir.iterdir()] == []


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="needs /proc to tell a reused pid")
def test_lock_of_a_reused_pid_is_stale(holder, released):
    """A live process whose start time differs from the lock's is not the one that took it."""
    info = LockInfo.parse((holder.run_dir / LOCK_NAME).read_text())
    reused = holder.run_dir.parent / "reused"
    reused.mkdir()
    (reused / LOCK_NAME).write_text(LockInfo(**{**info.__dict__, "process_start": info.process_start - 1}).to_text())
    released.append(lock_run_dir(reused))
    assert LockInfo.parse((reused / LOCK_NAME).read_text()).pid == os.getpid()


def test_own_stages_and_child_ranks_are_not_blocked(tmp_path, released):
    run_dir = tmp_path / "restem"
    released.append(lock_run_dir(run_dir, command="seal restem --run_dir restem"))
    stage = run_dir / "round_0" / "estep"
    assert lock_run_dir(stage) is None  # an in-process stage: this process's own lock covers it
    assert not (stage / LOCK_NAME).exists()

    join = "import sys\nfrom seal_pl.rundir import lock_run_dir\nassert lock_run_dir(sys.argv[1]) is None\n"
    inherited = {**clean_env(), LOCK_PID_ENV: os.environ[LOCK_PID_ENV]}
    for env in (inherited, clean_env(LOCAL_RANK="1"), clean_env(RANK="3")):
        # A stage subprocess (it inherits $SEAL_LOCK_PID), a DDP rank Lightning starts, a torchrun rank.
        for directory in (stage, run_dir):
            assert child(join, str(directory), env=env).wait(timeout=60) == 0

    # A process of another run is refused, and told who holds the directory.
    other = child(join, str(stage), stderr=subprocess.PIPE)
    _, err = other.communicate(timeout=60)
    assert other.returncode != 0 and f"pid {os.getpid()}" in err and "seal restem --run_dir restem" in err


def test_run_dir_that_is_a_file_is_a_user_error(tmp_path):
    path = tmp_path / "file"
    path.write_text("")
    with pytest.raises(NotADirectoryError):
        lock_run_dir(path)


# ------------------------------------------------------------------------------ atomic config
def fail_fsync(monkeypatch) -> None:
    def broken(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("seal_pl.rundir.os.fsync", broken)


def test_atomic_write_failure_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "config.yaml"
    write_text_atomic(path, "model: old\n")
    fail_fsync(monkeypatch)
    with pytest.raises(OSError, match="No space"):
        write_text_atomic(path, "model: new\n" * 1000)
    assert path.read_text() == "model: old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["config.yaml"]  # no partial or temporary file
    monkeypatch.undo()
    write_text_atomic(path, "model: new\n")
    assert path.read_text() == "model: new\n"


def test_run_config_and_restem_configs_are_written_atomically(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("model: old\n")
    parser = SimpleNamespace(dump=lambda config, skip_none=False: "model: new\n")
    trainer = SimpleNamespace(default_root_dir=str(run_dir), is_global_zero=True, strategy=SimpleNamespace())
    trainer.strategy.barrier = lambda: None
    callback = RunDirConfig(parser, config={}, overwrite=True)

    fail_fsync(monkeypatch)
    with pytest.raises(OSError):
        callback.setup(trainer, None, "test")
    with pytest.raises(OSError):
        runner._write_text(tmp_path / "restem.yaml", "rounds: 2\n")
    assert (run_dir / "config.yaml").read_text() == "model: old\n"
    assert [p.name for p in run_dir.iterdir()] == ["config.yaml"]
    assert not (tmp_path / "restem.yaml").exists() and len(list(tmp_path.iterdir())) == 1

    monkeypatch.undo()
    callback.setup(trainer, None, "test")
    assert (run_dir / "config.yaml").read_text() == "model: new\n"


# ------------------------------------------------------------------------------------- stops
def test_sigint_during_an_item_stops_after_it_and_a_second_stops_at_once(tmp_path, capsys):
    # The handler the scopes must give back: Python's default, or SIG_IGN when pytest itself was started
    # in the background (a non-interactive shell's `cmd &` ignores SIGINT).
    sigint_before = signal.getsignal(signal.SIGINT)
    argv = ["test", "--config", "a.yaml", "--run_dir", str(tmp_path / "run")]
    with pytest.raises(SystemExit) as stopped, command_scope(argv):
        begin_item()
        signal.raise_signal(signal.SIGINT)  # deferred: the item goes on
        finished = True
        end_item()
    assert finished and stopped.value.code == 130
    err = capsys.readouterr().err
    assert "stopped by SIGINT" in err and "resumable" in err and err.strip().endswith(f"seal {shlex.join(argv)}")

    with pytest.raises(SystemExit) as stopped, command_scope(argv):
        begin_item()
        signal.raise_signal(signal.SIGINT)
        with pytest.raises(RunStopped):
            signal.raise_signal(signal.SIGINT)  # Ctrl-C again: abandon the item now
            pytest.fail("not stopped at once")
        raise RunStopped(signal.SIGINT)
    assert stopped.value.code == 130

    # Outside an item a stop is immediate; the resume command names the default run directory.
    with pytest.raises(SystemExit) as stopped, command_scope(["test", "--config", "a.yaml"]):
        lock_run_dir(tmp_path / "default")
        signal.raise_signal(signal.SIGTERM)
        pytest.fail("not stopped")
    assert stopped.value.code == 143
    assert f"seal test --config a.yaml --run_dir {tmp_path / 'default'}" in capsys.readouterr().err
    assert not (tmp_path / "default" / LOCK_NAME).exists()
    assert signal.getsignal(signal.SIGINT) is sigint_before


def test_sigterm_during_seal_test_stops_resumably(tmp_path):
    run_dir = tmp_path / "run"
    args = tiny_test(run_dir, "--data.init_args.limit", "3")
    command = [sys.executable, "-m", "seal_pl", *args]
    process = subprocess.Popen(command, cwd=ROOT, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    progress = run_dir / "passages.rank0.jsonl"
    deadline = time.monotonic() + 300
    while not (progress.is_file() and progress.read_text().count("\n") >= 1):
        assert process.poll() is None, process.communicate()[1].decode()[-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=300)
    err = err.decode()

    assert process.returncode == 143, err[-3000:]
    message = [line for line in err.splitlines() if "resumable" in line]
    assert len(message) == 1 and message[0].endswith(shlex.join(command)), err[-3000:]
    assert not (run_dir / "results.json").exists() and not (run_dir / LOCK_NAME).exists()
    done = progress.read_text()
    assert done.endswith("\n") and 1 <= done.count("\n") <= 3
    before = [r["passage_id"] for r in read_records(progress)]

    main(args)  # the same command again finishes the run
    results = json.loads((run_dir / "results.json").read_text())
    assert results["n_passages"] == 3
    after = [r["passage_id"] for r in read_records(progress)]
    assert after[: len(before)] == before and len(after) == len(set(after)) == 3  # none redone
    assert not (run_dir / LOCK_NAME).exists()


STAGE = """
import signal, sys, time
from pathlib import Path
def stop(signum, frame):
    Path(sys.argv[1]).write_text(signal.Signals(signum).name)
    sys.exit(128 + signum)
signal.signal(signal.SIGTERM, stop)
signal.signal(signal.SIGINT, stop)
Path(sys.argv[2]).write_text("ready")
time.sleep(60)
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_restem_passes_stops_on_to_its_stage_subprocess(tmp_path, capsys, released, signum):
    run_dir = tmp_path / "restem"
    got, ready = tmp_path / "got", tmp_path / "ready"

    def stop_when_ready() -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signum})  # delivered to the main thread, as from outside
        deadline = time.monotonic() + 60
        while not ready.is_file() and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(os.getpid(), signum)

    argv = ["restem", "--config", "r.yaml", "--run_dir", str(run_dir)]
    with pytest.raises(SystemExit) as stopped, command_scope(argv):
        released.append(lock_run_dir(run_dir))
        threading.Thread(target=stop_when_ready, daemon=True).start()
        runner._run_command([sys.executable, "-c", STAGE, str(got), str(ready)])
        pytest.fail("the runner went on")
    assert got.read_text() == signal.Signals(signum).name  # the stage got the signal and stopped
    assert stopped.value.code == 128 + signum
    err = capsys.readouterr().err
    assert f"run in {run_dir.absolute()} is resumable" in err and err.strip().endswith(f"seal {shlex.join(argv)}")
    assert not (run_dir / LOCK_NAME).exists()
