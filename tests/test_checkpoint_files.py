"""Files written atomically (checkpoints, metrics, results): the umask's mode, and the temporary
files of a writer killed midway removed by the next save or load in that folder (issue 11
item 7), while a reader still sees the old file or the new one, never a partial one."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from fastlmrl import _atomic
from fastlmrl._atomic import atomic_write, atomic_write_text, remove_stale_temp_files, temp_name
from fastlmrl.checkpoint import load_checkpoint, save_checkpoint

posix_only = pytest.mark.skipif(sys.platform.startswith("win"), reason="POSIX modes and signals")


@posix_only
@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_new_and_replaced_files_get_the_umask_mode(tmp_path, umask, mode):
    """Files were 0600 whatever the umask (tempfile.mkstemp); open() gives 0o666 & ~umask."""
    old = os.umask(umask)
    try:
        text, ckpt = tmp_path / "metrics.jsonl", tmp_path / "run.ckpt"
        for _ in range(2):  # created, then replaced
            atomic_write_text(text, "{}\n")
            save_checkpoint(ckpt, {"q": np.zeros(3)}, {})
            with open(tmp_path / "reference.txt", "w"):
                pass
            for path in (text, ckpt, tmp_path / "reference.txt"):
                assert path.stat().st_mode & 0o777 == mode, path
    finally:
        os.umask(old)


def _fake_temp(folder, host=None, pid=None, target="run.ckpt", age=0.0):
    name = os.path.basename(temp_name(folder / target))
    prefix, rest = name.split("-fastlmrl-", 1)
    my_host, my_pid, token_and_target = rest.split("-", 2)
    name = (
        f"{prefix}-fastlmrl-{host or my_host}-{pid if pid is not None else my_pid}-"
        f"{token_and_target}"
    )
    path = folder / name
    path.write_bytes(b"x" * 100)
    if age:
        then = time.time() - age
        os.utime(path, (then, then))
    return path


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@posix_only
def test_stale_temp_files_are_recognised(tmp_path):
    old = _atomic.STALE_AFTER_SECONDS + 60
    dead = _fake_temp(tmp_path, pid=_dead_pid())  # writer gone
    mine = _fake_temp(tmp_path)  # this process, idle
    alive = _fake_temp(tmp_path, pid=os.getppid())  # another live writer
    alive_old = _fake_temp(tmp_path, pid=os.getppid(), age=old)  # pid reused long ago
    remote = _fake_temp(tmp_path, host="0123abcd", pid=1)  # other host, fresh
    remote_old = _fake_temp(tmp_path, host="0123abcd", pid=1, age=old)  # other host, stale
    legacy = tmp_path / ".tmp-k3j2_x9qrun.ckpt"  # mkstemp name, old
    legacy.write_bytes(b"x")
    os.utime(legacy, (time.time() - old, time.time() - old))
    keep = [
        tmp_path / ".tmp-notes.txt",
        tmp_path / "run.ckpt",
        tmp_path / ".tmp-fastlmrl-x",
        tmp_path / ".tmp-k3j2_x9qnotes.txt",
    ]
    for path in keep:
        path.write_bytes(b"mine")
        os.utime(path, (time.time() - old, time.time() - old))
    removed = remove_stale_temp_files(tmp_path)
    assert sorted(removed) == sorted(str(p) for p in (dead, mine, alive_old, remote_old, legacy))
    for path in (alive, remote, *keep):
        assert path.exists()


def test_a_file_being_written_by_this_process_is_not_removed(tmp_path):
    seen = []

    def write(handle):
        handle.write(b"partial")
        handle.flush()
        seen.extend(n for n in os.listdir(tmp_path) if n.startswith(".tmp-fastlmrl-"))
        assert remove_stale_temp_files(tmp_path) == []  # e.g. another thread saving here
        handle.write(b" and the rest")

    atomic_write(tmp_path / "out.bin", write)
    assert len(seen) == 1
    assert (tmp_path / "out.bin").read_bytes() == b"partial and the rest"
    assert os.listdir(tmp_path) == ["out.bin"]


WRITER = textwrap.dedent("""
    import sys, time
    from fastlmrl._atomic import atomic_write
    def write(handle):
        handle.write(b"\\0" * 200_000)
        handle.flush()
        print("writing", flush=True)
        time.sleep(60)
    atomic_write(sys.argv[1], write)
""")


@posix_only
def test_kill_9_during_a_save_leaves_a_temp_file_the_next_save_or_load_removes(tmp_path):
    path = tmp_path / "run.ckpt"
    save_checkpoint(path, {"q": np.arange(4.0)}, {"step": 1})
    before = path.read_bytes()
    for cleaner in ("save", "load"):
        child = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True
        )
        assert child.stdout.readline().strip() == "writing"
        leftovers = [n for n in os.listdir(tmp_path) if n.startswith(".tmp-")]
        assert len(leftovers) == 1 and f"-{child.pid}-" in leftovers[0]
        assert remove_stale_temp_files(tmp_path) == []  # its writer is alive: kept
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
        assert path.read_bytes() == before  # the old checkpoint, whole
        assert len([n for n in os.listdir(tmp_path) if n.startswith(".tmp-")]) == 1
        if cleaner == "save":
            save_checkpoint(path, {"q": np.arange(4.0)}, {"step": 2})
            assert load_checkpoint(path)[1] == {"step": 2}
            before = path.read_bytes()
        else:
            arrays, meta = load_checkpoint(path)
            assert meta == {"step": 2}
            assert path.read_bytes() == before
        assert os.listdir(tmp_path) == ["run.ckpt"]


@pytest.mark.parametrize(
    "path, error, words",
    [
        (None, TypeError, "path must be"),
        (3, TypeError, "path must be"),
        ("", ValueError, "path is empty"),
        ("a\0b", ValueError, "NUL"),
    ],
)
def test_bad_paths_are_refused_naming_the_argument(path, error, words):
    with pytest.raises(error, match=words):
        save_checkpoint(path, {"q": np.zeros(2)})
    with pytest.raises(error, match=words):
        load_checkpoint(path)


def test_folder_paths_and_bytes_paths(tmp_path):
    from fastlmrl.checkpoint import CheckpointError

    with pytest.raises(ValueError, match="is a folder"):
        save_checkpoint(tmp_path, {"q": np.zeros(2)})
    with pytest.raises(CheckpointError, match="is not a file"):
        load_checkpoint(tmp_path)
    with pytest.raises(FileNotFoundError, match="folder .* does not exist"):
        save_checkpoint(tmp_path / "missing" / "x.ckpt", {"q": np.zeros(2)})
    target = os.fsencode(str(tmp_path / "b.ckpt"))
    save_checkpoint(target, {"q": np.ones(2)})
    np.testing.assert_array_equal(load_checkpoint(target)[0]["q"], np.ones(2))
    assert os.listdir(tmp_path) == ["b.ckpt"]
