"""CharTokenizer / WordTokenizer: vocabulary, round trips, unknown tokens, save/load, bad input."""

import json
import os

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fastlmrl
from fastlmrl import CharTokenizer, WordTokenizer, load_tokenizer


def test_special_ids_and_char_vocabulary_order():
    tok = CharTokenizer("bca\nab")
    assert (fastlmrl.BOS_ID, fastlmrl.EOS_ID, fastlmrl.UNK_ID) == (0, 1, 2)
    # specials first, then the characters by code point; the line break is not a token
    assert tok.tokens == ["<bos>", "<eos>", "<unk>", "a", "b", "c"]
    assert tok.vocab_size == len(tok) == 6
    assert tok.token_to_id("c") == 5 and tok.token_to_id("z") is None
    assert tok.id_to_token(3) == "a" and tok.id_to_token(6) is None and tok.id_to_token(-1) is None
    assert tok.get_vocab() == {"<bos>": 0, "<eos>": 1, "<unk>": 2, "a": 3, "b": 4, "c": 5}
    assert (tok.bos_id, tok.eos_id, tok.unk_id) == (0, 1, 2)


def test_char_encode_decode_unknown_and_specials():
    tok = CharTokenizer("ab c")
    ids = tok.encode("cab?", add_bos=True, add_eos=True)
    assert ids.dtype == np.int64
    # ' '=3, a=4, b=5, c=6 (code points 32 < 97 < 98 < 99); '?' unseen -> <unk> = 2
    assert ids.tolist() == [0, 6, 4, 5, 2, 1]
    assert tok.decode(ids) == "cab<unk>"
    assert tok.decode(ids, skip_special=False) == "<bos>cab<unk><eos>"
    assert tok.encode("a\nb").tolist() == [4, 2, 5]  # a line break is not a token
    assert tok.encode("", dtype=np.int32).dtype == np.int32
    assert tok.encode("").shape == (0,) and tok.decode([]) == ""
    assert tok.encode("ab", dtype=np.int32).tolist() == [4, 5]


def test_unfitted_char_tokenizer_maps_everything_to_unk():
    tok = CharTokenizer()
    assert tok.vocab_size == 3
    assert tok.encode("xy").tolist() == [2, 2]


@given(st.text(min_size=1, max_size=200))
def test_char_round_trip_on_its_own_text(text):
    tok = CharTokenizer(text)
    body = "".join(c for c in text if c not in "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029")
    ids = tok.encode(body)
    assert ids.shape == (len(body),)
    assert (ids >= 3).all()
    assert tok.decode(ids) == body
    # vectorised encoding agrees with a per-character dictionary lookup
    assert ids.tolist() == [tok.token_to_id(c) for c in body]


@given(
    st.lists(
        st.sampled_from(["the", "cat", "sat", "on", "mat", "a", "é", "日本"]),
        min_size=1,
        max_size=30,
    )
)
def test_word_round_trip(words):
    text = " ".join(words)
    tok = WordTokenizer(text)
    assert tok.decode(tok.encode(text)) == text
    assert tok.decode(tok.encode("  ".join(words) + "\t")) == text  # any whitespace


def test_word_vocabulary_frequency_order_unknown_min_count_max_size():
    text = "b a b c\nb a d"
    tok = WordTokenizer(text)
    # counts: b 3, a 2, c 1, d 1 -> by decreasing count, ties by string
    assert tok.tokens == ["<bos>", "<eos>", "<unk>", "b", "a", "c", "d"]
    assert tok.encode("a zebra b").tolist() == [4, 2, 3]
    assert tok.decode(tok.encode("a zebra b")) == "a <unk> b"
    tok2 = WordTokenizer(text, min_count=2)
    assert tok2.tokens[3:] == ["b", "a"]
    assert tok2.encode("c d").tolist() == [2, 2]
    tok3 = WordTokenizer(text, max_vocab_size=4)
    assert tok3.tokens == ["<bos>", "<eos>", "<unk>", "b"]
    # a literal special word in the text is the special token, not a new one
    tok4 = WordTokenizer("x <unk> <eos>")
    assert tok4.tokens == ["<bos>", "<eos>", "<unk>", "x"]
    assert tok4.encode("x <eos>").tolist() == [3, 1]


def test_char_min_count_and_max_vocab_size():
    tok = CharTokenizer("aaabbc", min_count=2)
    assert tok.tokens[3:] == ["a", "b"]
    tok = CharTokenizer("abbccc", max_vocab_size=5)  # keeps the 2 most frequent, by code point
    assert tok.tokens[3:] == ["b", "c"]
    assert tok.encode("abc").tolist() == [2, 3, 4]


def test_encode_lines_gives_one_sequence_per_non_blank_line():
    tok = CharTokenizer("ab")
    seqs = tok.encode_lines("ab\n\n  \n b a \r\nba")
    # a=3, b=4; lines are stripped; the inner space is unseen -> <unk> = 2
    assert [s.tolist() for s in seqs] == [[3, 4], [4, 2, 3], [4, 3]]
    assert [tok.decode(s) for s in seqs] == ["ab", "b<unk>a", "ba"]
    assert all(s.dtype == np.int64 for s in seqs)
    w = WordTokenizer("x y")
    assert [s.tolist() for s in w.encode_lines("x y\n\ny z\n")] == [[3, 4], [4, 2]]


def test_explicit_tokens_and_fit_replaces_vocabulary():
    tok = CharTokenizer(tokens=["z", "a"])
    assert tok.tokens == ["<bos>", "<eos>", "<unk>", "z", "a"]
    assert tok.encode("az").tolist() == [4, 3]
    assert tok.fit("q") is tok and tok.tokens[3:] == ["q"]
    w = WordTokenizer(tokens=["hello", "world"])
    assert w.encode("world hello").tolist() == [4, 3]


@pytest.mark.parametrize(
    "cls,text",
    [(CharTokenizer, "héllo wörld 日本 \u2603"), (WordTokenizer, "héllo wörld 日本 héllo \u2603")],
)
def test_save_load_round_trip(tmp_path, cls, text):
    tok = cls(text, min_count=1, max_vocab_size=50)
    path = tmp_path / "tok.json"
    tok.save(path)
    assert load_tokenizer(path) == tok
    assert cls.load(str(path)) == tok
    again = cls.load(path)
    assert again.encode(text).tolist() == tok.encode(text).tolist()
    assert again.max_vocab_size == 50 and again.min_count == 1
    # atomic write: no temporary file left behind, and overwriting works
    assert os.listdir(tmp_path) == ["tok.json"]
    cls("other text").save(path)
    assert load_tokenizer(path).tokens != tok.tokens
    assert os.listdir(tmp_path) == ["tok.json"]
    data = json.loads(path.read_text("utf-8"))
    assert data["format"] == "fastlmrl.tokenizer" and data["type"] == cls.kind


def test_save_handles_lone_surrogates(tmp_path):
    tok = CharTokenizer("a\ud800")
    tok.save(tmp_path / "t.json")
    assert load_tokenizer(tmp_path / "t.json") == tok
    assert tok.encode("\ud800a\udfff").tolist() == [4, 3, 2]


def test_failed_save_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "t.json"
    CharTokenizer("ab").save(path)
    before = path.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        CharTokenizer("xyz").save(path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["t.json"]


def test_load_errors_name_the_file(tmp_path):
    missing = tmp_path / "nope.json"
    with pytest.raises(ValueError, match="nope.json.*does not exist"):
        load_tokenizer(missing)
    with pytest.raises(ValueError, match="is a directory"):
        load_tokenizer(tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_bytes(b"\xff\xfe{")
    with pytest.raises(ValueError, match="bad.json.*not valid UTF-8 JSON"):
        load_tokenizer(bad)
    bad.write_text("{not json", "utf-8")
    with pytest.raises(ValueError, match="not valid UTF-8 JSON"):
        load_tokenizer(bad)
    bad.write_text('{"format": "other"}', "utf-8")
    with pytest.raises(ValueError, match="not a fastlmrl tokenizer"):
        load_tokenizer(bad)
    good = {
        "format": "fastlmrl.tokenizer",
        "version": 1,
        "type": "char",
        "min_count": 1,
        "max_vocab_size": None,
        "tokens": ["<bos>", "<eos>", "<unk>", "a"],
    }
    for change, msg in [
        ({"version": 2}, "version"),
        ({"type": "bpe"}, "type"),
        ({"tokens": ["a", "<bos>"]}, "tokens"),
        ({"tokens": ["<bos>", "<eos>", "<unk>", "ab"]}, "one character"),
        ({"tokens": ["<bos>", "<eos>", "<unk>", "a", "a"]}, "unique"),
        ({"min_count": 0}, "min_count"),
    ]:
        bad.write_text(json.dumps({**good, **change}), "utf-8")
        with pytest.raises(ValueError, match=msg):
            load_tokenizer(bad)
    ok = tmp_path / "ok.json"
    ok.write_text(json.dumps(good), "utf-8")
    assert load_tokenizer(ok).tokens[3:] == ["a"]
    with pytest.raises(ValueError, match="CharTokenizer, not a WordTokenizer"):
        WordTokenizer.load(ok)


def test_bad_arguments():
    with pytest.raises(TypeError, match="text must be a str"):
        CharTokenizer(b"bytes")
    with pytest.raises(TypeError, match="text must be a str"):
        CharTokenizer("a").encode(["a"])
    fitted = WordTokenizer("x y")
    with pytest.raises(TypeError, match="text must be a str"):
        fitted.fit(None)
    assert fitted.tokens[3:] == ["x", "y"]  # a failed fit keeps the vocabulary
    with pytest.raises(TypeError, match="dtype must be int32 or int64"):
        CharTokenizer("a").encode("a", dtype=np.float64)
    with pytest.raises(ValueError, match="min_count must be >= 1"):
        WordTokenizer("a", min_count=0)
    with pytest.raises(TypeError, match="min_count"):
        WordTokenizer("a", min_count=1.5)
    with pytest.raises(ValueError, match="max_vocab_size must be >= 4"):
        WordTokenizer("a", max_vocab_size=3)
    with pytest.raises(ValueError, match="either text or tokens"):
        CharTokenizer("a", tokens=["a"])
    with pytest.raises(ValueError, match="special token"):
        WordTokenizer(tokens=["<unk>"])
    with pytest.raises(ValueError, match="line break"):
        WordTokenizer(tokens=["a\nb"])
    with pytest.raises(ValueError, match="unique"):
        WordTokenizer(tokens=["a", "a"])
    with pytest.raises(TypeError, match="strings"):
        WordTokenizer(tokens=[1])
    tok = CharTokenizer("ab")
    with pytest.raises(ValueError, match=r"ids\[1\] = 5 is out of range \[0, 5\)"):
        tok.decode([3, 5])
    with pytest.raises(ValueError, match=r"ids\[0\] = -1 is out of range"):
        tok.decode(np.array([-1], np.int32))
    with pytest.raises(TypeError, match="integer ids"):
        tok.decode([3.0])
    with pytest.raises(ValueError, match="1-dimensional"):
        tok.decode([[3]])
    with pytest.raises(TypeError, match="token_id must be an int"):
        tok.id_to_token("3")
