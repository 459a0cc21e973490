"""fastlmrl.neural: tokenizer adapter, model building, atomic save / local load (no network)."""

import os
import subprocess
import sys

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
try:  # missing packages fail the run, they are never skipped
    import torch
    import transformers  # noqa: F401
except ImportError as exc:
    raise ImportError(
        "the fastlmrl.neural tests need PyTorch and transformers: pip install "
        "torch==2.13.0 (CPU build), then pip install 'fastlmrl[neural]'"
    ) from exc

from fastlmrl import CharTokenizer, WordTokenizer  # noqa: E402
from fastlmrl.neural import (  # noqa: E402
    TokenizerAdapter,
    as_tokenizer,
    build_model,
    load_model,
    read_metadata,
    save_model,
)


def hf_tokenizer():
    """A Hugging Face fast tokenizer built in memory (word-level, no download)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {
        "[PAD]": 0,
        "[BOS]": 1,
        "[EOS]": 2,
        "[UNK]": 3,
        "a": 4,
        "b": 5,
        "c": 6,
        "12": 7,
        "+": 8,
    }
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="[BOS]",
        eos_token="[EOS]",
        pad_token="[PAD]",
        unk_token="[UNK]",
    )


# -- tokenizer adapter ---------------------------------------------------------------------------
def test_adapter_over_char_tokenizer():
    ct = CharTokenizer(tokens=list("abc="))  # ids: <bos>0 <eos>1 <unk>2 a3 b4 c5 =6
    tok = TokenizerAdapter(ct)
    assert tok.kind == "fastlmrl" and tok.vocab_size == 7 and len(tok) == 7
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (0, 1, 1)
    assert tok.encode("cab=") == [5, 3, 4, 6]
    assert tok.encode("ab", add_bos=True) == [0, 3, 4]
    assert tok.encode("az") == [3, 2]
    assert tok.decode([0, 5, 3, 1]) == "ca"
    assert tok.decode(np.array([3, 4])) == "ab"
    assert tok.decode(torch.tensor([3, 1]), skip_special_tokens=False) == "a<eos>"
    assert tok.batch_decode([[3], [4, 5]]) == ["a", "bc"]
    assert as_tokenizer(tok) is tok and as_tokenizer(ct).tokenizer is ct
    with pytest.raises(ValueError, match=r"ids\[1\] = 7"):
        tok.decode([3, 7])


def test_adapter_over_word_tokenizer():
    tok = as_tokenizer(WordTokenizer("the cat the dog"))
    ids = tok.encode("the dog")
    assert len(ids) == 2 and tok.decode(ids) == "the dog"


def test_encode_prompts_left_pads():
    tok = TokenizerAdapter(CharTokenizer(tokens=list("abc=")))
    ids, mask = tok.encode_prompts(["ab=", "c"])
    assert ids.dtype == torch.int64
    assert ids.tolist() == [[0, 3, 4, 6], [1, 1, 0, 5]]  # pad = <eos> = 1 on the left
    assert mask.tolist() == [[1, 1, 1, 1], [0, 0, 1, 1]]
    ids, mask = tok.encode_prompts(["a", ""], add_bos=True, return_tensors="np")
    assert ids.tolist() == [[0, 3], [1, 0]] and mask.tolist() == [[1, 1], [0, 1]]
    with pytest.raises(ValueError, match=r"texts\[0\] encodes to no token"):
        tok.encode_prompts([""], add_bos=False)
    with pytest.raises(TypeError, match="single str"):
        tok.encode_prompts("ab")


def test_adapter_over_hugging_face_tokenizer():
    tok = TokenizerAdapter(hf_tokenizer())
    assert tok.kind == "huggingface" and tok.vocab_size == 9
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (1, 2, 0)
    assert tok.encode("12 + a") == [7, 8, 4]
    assert tok.encode("a", add_bos=True) == [1, 4]
    assert tok.decode([1, 4, 5, 2]) == "a b"
    ids, mask = tok.encode_prompts(["a b", "c"])
    assert ids.tolist() == [[1, 4, 5], [0, 1, 6]] and mask.tolist() == [[1, 1, 1], [0, 1, 1]]


def test_adapter_rejects_other_objects():
    with pytest.raises(TypeError, match="tokenizer must be"):
        TokenizerAdapter("abc")


# -- models --------------------------------------------------------------------------------------
TINY = dict(n_layer=1, n_embd=16, n_head=2, n_positions=32)


@pytest.mark.parametrize("architecture", ["gpt2", "llama"])
def test_build_model_is_a_transformers_model_seeded(architecture):
    import transformers

    a = build_model(11, architecture=architecture, seed=3, **TINY)
    b = build_model(11, architecture=architecture, seed=3, **TINY)
    c = build_model(11, architecture=architecture, seed=4, **TINY)
    cls = transformers.GPT2LMHeadModel if architecture == "gpt2" else transformers.LlamaForCausalLM
    assert type(a) is cls
    x = torch.tensor([[0, 5, 6, 7]])
    la, lb, lc = (m(input_ids=x).logits for m in (a, b, c))
    assert la.shape == (1, 4, 11)
    assert torch.equal(la, lb) and not torch.equal(la, lc)
    assert a.get_output_embeddings().weight.shape == (11, 16)


def test_build_model_leaves_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_model(11, seed=0, **TINY)
    assert torch.equal(torch.rand(3), expected)


def test_build_model_checks_arguments():
    with pytest.raises(ValueError, match="architecture"):
        build_model(11, architecture="bert", **TINY)
    with pytest.raises(ValueError, match="multiple of n_head"):
        build_model(11, n_layer=1, n_embd=10, n_head=3)
    with pytest.raises(ValueError, match="eos_token_id = 20"):
        build_model(11, eos_token_id=20, **TINY)
    with pytest.raises(TypeError, match="seed"):
        build_model(11, seed=1.5, **TINY)


def test_save_load_round_trip_same_logits(tmp_path):
    ct = CharTokenizer("hello world 12+35=47")
    model = build_model(ct.vocab_size, seed=1, **TINY)
    folder = tmp_path / "m"
    save_model(model, ct, folder, metadata={"note": "x"})
    loaded, tok = load_model(folder)
    assert isinstance(tok, TokenizerAdapter) and tok.tokenizer == ct
    x = torch.tensor([ct.encode("hello", add_bos=True).tolist()])
    with torch.no_grad():
        assert torch.equal(model(input_ids=x).logits, loaded(input_ids=x).logits)
    assert read_metadata(folder) == {"note": "x"}
    # overwrite: the folder is replaced whole, no temporary folder is left behind
    other = build_model(ct.vocab_size, seed=2, **TINY)
    save_model(other, ct, folder)
    again, _ = load_model(folder)
    with torch.no_grad():
        assert torch.equal(other(input_ids=x).logits, again(input_ids=x).logits)
    assert read_metadata(folder) == {}
    assert sorted(os.listdir(tmp_path)) == ["m"]


def test_save_failure_leaves_old_folder(tmp_path):
    ct = CharTokenizer("abc")
    model = build_model(ct.vocab_size, seed=1, **TINY)
    folder = tmp_path / "m"
    save_model(model, ct, folder)
    before = sorted(os.listdir(folder))
    with pytest.raises(TypeError):
        save_model(model, ct, folder, metadata={"bad": object()})
    with pytest.raises(TypeError, match="tokenizer"):
        save_model(model, object(), folder)
    assert sorted(os.listdir(folder)) == before and sorted(os.listdir(tmp_path)) == ["m"]


def test_load_a_plain_hugging_face_folder(tmp_path):
    hf = hf_tokenizer()
    model = build_model(
        len(hf),
        architecture="llama",
        seed=0,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        **TINY,
    )
    model.save_pretrained(tmp_path)
    hf.save_pretrained(tmp_path)
    loaded, tok = load_model(tmp_path)
    assert tok.kind == "huggingface" and tok.encode("a b") == [4, 5]
    x = torch.tensor([[1, 4, 5]])
    with torch.no_grad():
        assert torch.equal(model(input_ids=x).logits, loaded(input_ids=x).logits)
    assert read_metadata(tmp_path) == {}


def test_load_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_model(tmp_path / "nope")
    with pytest.raises(ValueError, match="no config.json"):
        load_model(tmp_path)
    build_model(5, seed=0, **TINY).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="no tokenizer"):
        load_model(tmp_path)


def test_missing_transformers_names_the_install_command():
    code = (
        "import sys; sys.modules['transformers'] = None\n"
        "try:\n    import fastlmrl.neural\nexcept ImportError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "pip install 'fastlmrl[neural]'" in out.stdout, out.stdout + out.stderr


def test_import_fastlmrl_does_not_import_transformers():
    code = "import sys, fastlmrl; print('transformers' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["False", "False"], out.stdout + out.stderr
