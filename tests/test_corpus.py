"""The default corpus (deterministic, offline), user corpus files, the train/test split."""

import hashlib
import os
import subprocess
import sys

import pytest

import fastlmrl
from fastlmrl import default_corpus, generate_corpus, load_corpus, train_test_split

# The default corpus is frozen: changing the grammar or the generator changes this digest (update
# it deliberately, together with any figure that depends on the corpus).
DEFAULT_SHA256 = "86fc6ccb8f0f1b3ef724b13ec922def8534d98034dbee9e63e8fc1dd6fc134b4"


def _sha(text):
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def test_default_corpus_shape():
    text = default_corpus()
    assert 50_000 <= len(text.encode("utf-8")) <= 200_000
    assert text.isascii() and "\x00" not in text
    lines = text.splitlines()
    assert len(lines) == fastlmrl.DEFAULT_SENTENCES == 2000
    assert text.endswith("\n") and all(line.strip() == line and line for line in lines)
    assert all(line[0].isupper() and line[-1] in ".?!" for line in lines)
    assert len(set(lines)) > 1500  # varied, not a handful of repeated sentences
    assert len(set(text.split())) > 200


def test_default_corpus_is_deterministic_and_frozen():
    assert default_corpus() == generate_corpus(2000, 0) == load_corpus() == load_corpus(None)
    assert _sha(default_corpus()) == DEFAULT_SHA256


def test_default_corpus_does_not_depend_on_the_hash_seed():
    code = (
        "import hashlib, fastlmrl; "
        "print(hashlib.sha256(fastlmrl.default_corpus().encode()).hexdigest())"
    )
    for hash_seed in ("1", "12345"):
        env = dict(os.environ, PYTHONHASHSEED=hash_seed)
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        assert out.stdout.strip() == DEFAULT_SHA256


def test_generate_corpus_prefix_and_seeds():
    long = generate_corpus(50, seed=3)
    assert long.startswith(generate_corpus(20, seed=3))
    assert long.count("\n") == 50
    assert generate_corpus(50, seed=4) != long
    with pytest.raises(ValueError, match="n_sentences must be >= 1"):
        generate_corpus(0)
    with pytest.raises(ValueError, match="seed must be >= 0"):
        generate_corpus(5, seed=-1)
    with pytest.raises(TypeError, match="n_sentences must be an int"):
        generate_corpus(5.0)


def test_load_user_file(tmp_path):
    path = tmp_path / "my corpus.txt"
    path.write_bytes("\ufeffHéllo wörld\r\nsecond line\rthird\n".encode("utf-8"))
    assert load_corpus(path) == "Héllo wörld\nsecond line\nthird\n"
    assert load_corpus(str(path)) == load_corpus(os.fsencode(path))


@pytest.mark.parametrize(
    "content,message",
    [
        (b"", "is empty"),
        (b" \n\t\r\n  ", "holds only whitespace"),
        (b"text\x00more", "looks binary: it contains a NUL byte at offset 4"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "looks binary"),
        (b"caf\xe9 latin-1", "not valid UTF-8: byte 0xe9 at offset 3"),
        (b"ok\n\xff", "not valid UTF-8: byte 0xff at offset 3"),
    ],
)
def test_bad_corpus_files_raise_naming_the_problem(tmp_path, content, message):
    path = tmp_path / "corpus.bin"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message) as info:
        load_corpus(path)
    assert "corpus.bin" in str(info.value)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(ValueError, match=r"corpus file .*missing\.txt' does not exist"):
        load_corpus(tmp_path / "missing.txt")
    with pytest.raises(ValueError, match="is a directory"):
        load_corpus(tmp_path)
    with pytest.raises(TypeError, match="path must be a str"):
        load_corpus(3)


def test_train_test_split():
    text = "".join(f"line {i}\n" for i in range(10)) + "\n  \n"
    train, test = train_test_split(text, 0.2)
    assert train == "".join(f"line {i}\n" for i in range(8))
    assert test == "line 8\nline 9\n"
    assert train_test_split(text, 0.2) == (train, test)
    # at least one line on each side
    assert train_test_split("a\nb\n", 0.01) == ("a\n", "b\n")
    assert train_test_split("a\nb\n", 0.99) == ("a\n", "b\n")
    tr, te = train_test_split(default_corpus())
    assert tr.count("\n") == 1800 and te.count("\n") == 200
    assert tr + te == default_corpus()


def test_train_test_split_bad_input():
    with pytest.raises(ValueError, match="at least 2 non-blank lines"):
        train_test_split("one line\n\n")
    for frac in (0.0, 1.0, -0.5, float("nan")):
        with pytest.raises(ValueError, match="test_fraction"):
            train_test_split("a\nb\n", frac)
    with pytest.raises(TypeError, match="text must be a str"):
        train_test_split(b"a\nb\n")
