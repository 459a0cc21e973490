"""Checkpoint files: round trip, atomic replacement, and refusal of broken or foreign files."""

import json
import os
import zipfile

import numpy as np
import pytest

from fastlmrl.checkpoint import CheckpointError, load_checkpoint, save_checkpoint


def _state():
    rng = np.random.default_rng(0)
    return (
        {
            "q": rng.standard_normal((5, 3)).astype(np.float32),
            "counts": np.arange(15, dtype=np.int64).reshape(5, 3),
        },
        {"algo": "q_learning", "step": 7, "rng": {"seed": 1, "stream": 0, "counter": 42}},
    )


def test_round_trip(tmp_path):
    arrays, meta = _state()
    path = tmp_path / "run.ckpt"
    save_checkpoint(path, arrays, meta)
    got, got_meta = load_checkpoint(path)
    assert got_meta == meta
    assert set(got) == set(arrays)
    for k in arrays:
        assert got[k].dtype == arrays[k].dtype
        np.testing.assert_array_equal(got[k], arrays[k])


def test_overwrite_is_atomic_and_leaves_no_temporary_files(tmp_path):
    arrays, meta = _state()
    path = tmp_path / "run.ckpt"
    save_checkpoint(path, arrays, meta)
    save_checkpoint(path, {"q": arrays["q"] * 2}, dict(meta, step=8))
    got, got_meta = load_checkpoint(path)
    assert got_meta["step"] == 8 and set(got) == {"q"}
    assert os.listdir(tmp_path) == ["run.ckpt"]


def test_failed_save_keeps_the_old_file(tmp_path):
    arrays, meta = _state()
    path = tmp_path / "run.ckpt"
    save_checkpoint(path, arrays, meta)
    before = path.read_bytes()
    with pytest.raises(TypeError, match="JSON"):
        save_checkpoint(path, arrays, {"bad": object()})
    with pytest.raises(TypeError, match="dtype object"):
        save_checkpoint(path, {"x": np.array([None])}, meta)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["run.ckpt"]


def test_truncated_file_is_refused(tmp_path):
    arrays, meta = _state()
    path = tmp_path / "run.ckpt"
    save_checkpoint(path, arrays, meta)
    data = path.read_bytes()
    for cut in (10, len(data) // 2, len(data) - 30):
        path.write_bytes(data[:cut])
        with pytest.raises(CheckpointError):
            load_checkpoint(path)


def test_flipped_byte_is_detected(tmp_path):
    arrays, meta = _state()
    path = tmp_path / "run.ckpt"
    save_checkpoint(path, arrays, meta)
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("q.npy")
    # flip a byte inside the q array's data (after the local header and the .npy header)
    offset = info.header_offset + 30 + len(info.filename) + 128 + 4
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupted|checksum"):
        load_checkpoint(path)


def test_foreign_and_missing_files(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.ckpt")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="not a readable archive"):
        load_checkpoint(text)
    foreign = tmp_path / "other.npz"
    np.savez(foreign, q=np.zeros(3))
    with pytest.raises(CheckpointError, match="no fastlmrl.json"):
        load_checkpoint(foreign)
    spoof = tmp_path / "spoof.ckpt"
    with zipfile.ZipFile(spoof, "w") as z:
        z.writestr("fastlmrl.json", json.dumps({"format": "something-else"}))
    with pytest.raises(CheckpointError, match="foreign format"):
        load_checkpoint(spoof)
    future = tmp_path / "future.ckpt"
    with zipfile.ZipFile(future, "w") as z:
        z.writestr("fastlmrl.json", json.dumps({"format": "fastlmrl-checkpoint", "version": 99}))
    with pytest.raises(CheckpointError, match="version 99"):
        load_checkpoint(future)


def test_bad_arguments(tmp_path):
    with pytest.raises(TypeError, match="arrays must be a dict"):
        save_checkpoint(tmp_path / "x", [np.zeros(2)])
    with pytest.raises(TypeError, match="numpy.ndarray"):
        save_checkpoint(tmp_path / "x", {"a": [1, 2]})
    with pytest.raises(ValueError, match="invalid array name"):
        save_checkpoint(tmp_path / "x", {"a/b": np.zeros(2)})


def _small_checkpoint(tmp_path):
    arrays = {"q": np.arange(6, dtype=np.float64).reshape(2, 3), "n": np.array([3], np.int64)}
    meta = {"algorithm": "q_learning", "iterations_done": 2}
    path = tmp_path / "small.ckpt"
    save_checkpoint(path, arrays, meta)
    return path, arrays, meta


def _load_or_checkpoint_error(path, arrays, meta):
    """Loading a damaged file either raises CheckpointError naming it, or returns exactly the
    saved content (a byte zipfile never reads, e.g. a timestamp, may change harmlessly)."""
    try:
        got, got_meta = load_checkpoint(path)
    except CheckpointError as exc:
        assert str(path) in str(exc)
        return 1
    assert got_meta == meta and set(got) == set(arrays)
    for k in arrays:
        assert got[k].dtype == arrays[k].dtype
        np.testing.assert_array_equal(got[k], arrays[k])
    return 0


@pytest.mark.parametrize("mask", [0xFF, 0x01])
def test_every_flipped_byte_gives_checkpoint_error_or_the_saved_content(tmp_path, mask):
    """Issue 11 item 5: damaged checkpoints leaked EOFError, zlib.error, NotImplementedError,
    RuntimeError("encrypted") ... depending on the byte.  Every position, two bit masks."""
    path, arrays, meta = _small_checkpoint(tmp_path)
    data = path.read_bytes()
    refused = 0
    for pos in range(len(data)):
        damaged = bytearray(data)
        damaged[pos] ^= mask
        path.write_bytes(bytes(damaged))
        refused += _load_or_checkpoint_error(path, arrays, meta)
    assert refused > len(data) // 2  # most bytes matter (headers, CRCs, data, digests)


def test_every_truncation_and_extension_gives_checkpoint_error(tmp_path):
    path, arrays, meta = _small_checkpoint(tmp_path)
    data = path.read_bytes()
    for cut in range(len(data)):
        path.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match="small.ckpt"):
            load_checkpoint(path)
    for junk in (b"\x00", b"PK\x05\x06" + b"\x00" * 18, data):
        path.write_bytes(data + junk)
        _load_or_checkpoint_error(path, arrays, meta)


def test_unsupported_member_kinds_give_checkpoint_error(tmp_path):
    """A member marked encrypted or compressed with an unknown method (zipfile raises
    RuntimeError / NotImplementedError) is refused as a CheckpointError."""
    path, arrays, meta = _small_checkpoint(tmp_path)
    data = path.read_bytes()
    central = [i for i in range(len(data) - 4) if data[i : i + 4] == b"PK\x01\x02"]
    assert len(central) == 3  # fastlmrl.json, q.npy, n.npy
    for entry in central:
        for field, value in ((8, 0x01), (10, 99)):  # general-purpose flag bit 0; method 99
            damaged = bytearray(data)
            damaged[entry + field] = value
            path.write_bytes(bytes(damaged))
            with pytest.raises(CheckpointError, match="small.ckpt"):
                load_checkpoint(path)
