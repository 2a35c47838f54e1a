"""The tokenize stage on its own: exact ids, BOS/EOD, rejects, options, dtype choice."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tokenizers_fixtures import (  # noqa: F401
    byte_bpe_tokenizer_path,
    multilingual_text,
    sentencepiece_tokenizer_path,
)
from transformers import AutoTokenizer

from pipeline.encode import tokenize as ts
from pipeline.errors import UserError
from pipeline.formats.indexed_dataset import token_dtype_for_vocab
from pipeline.formats.tokenizer import load_tokenizer


def _documents(part: ts.TokenizedPartition) -> list[list[int]]:
    o = part.offsets
    return [part.tokens[o[i] : o[i + 1]].tolist() for i in range(part.documents)]


@pytest.mark.parametrize("which", ["byte_bpe", "sentencepiece"])
def test_documents_equal_tokenizer_call(
    which,
    byte_bpe_tokenizer_path,  # noqa: F811
    sentencepiece_tokenizer_path,  # noqa: F811
):
    path = byte_bpe_tokenizer_path if which == "byte_bpe" else sentencepiece_tokenizer_path
    tok = AutoTokenizer.from_pretrained(str(path))
    payload = load_tokenizer(path)
    # Special-token text, added tokens and odd whitespace all go through the same Rust call.
    texts = multilingual_text(400, seed=11) + [
        "<|endoftext|> a <s> b </s>",
        "x" * 5000,
        " lead",
        "日本語テキスト",
    ]
    options = ts.encode_options(payload, append_eod=True)
    part = ts.tokenize_records([{"text": t} for t in texts], payload, options, np.int32)
    assert part.rejects == [] and part.documents == len(texts)
    assert _documents(part) == [tok(t)["input_ids"] + [tok.eos_token_id] for t in texts]


def test_small_batches_give_the_same_tokens(byte_bpe_tokenizer_path, monkeypatch):  # noqa: F811
    payload = load_tokenizer(byte_bpe_tokenizer_path)
    records = [{"text": t} for t in multilingual_text(300, seed=4)]
    options = ts.encode_options(payload, append_eod=True, add_bos=True)
    whole = ts.tokenize_records(records, payload, options, np.uint16)
    monkeypatch.setattr(ts, "BATCH_DOCS", 7)
    batched = ts.tokenize_records(records, payload, options, np.uint16)
    assert np.array_equal(whole.tokens, batched.tokens) and np.array_equal(
        whole.offsets, batched.offsets
    )
    assert whole.tokens.dtype == np.uint16


def test_bos_and_eod(byte_bpe_tokenizer_path):  # noqa: F811
    tok = AutoTokenizer.from_pretrained(str(byte_bpe_tokenizer_path))
    payload = load_tokenizer(byte_bpe_tokenizer_path)
    texts = ["hello world", "a"]
    options = ts.encode_options(payload, add_bos=True, append_eod=True, eod_id=5, bos_id=7)
    docs = _documents(ts.tokenize_records([{"text": t} for t in texts], payload, options, np.int32))
    assert docs == [[7, *tok(t)["input_ids"], 5] for t in texts]
    plain = ts.tokenize_records([{"text": "hello"}], payload, ts.encode_options(payload), np.int32)
    assert _documents(plain) == [tok("hello")["input_ids"]]


def test_no_second_bos_when_the_tokenizer_adds_one(tmp_path, sentencepiece_tokenizer_path):  # noqa: F811
    from tokenizers import Tokenizer, processors

    # A Llama-style template: the tokenizer itself starts every document with <s>.
    raw = json.loads((sentencepiece_tokenizer_path / "tokenizer.json").read_text())
    backend = Tokenizer.from_str(json.dumps(raw))
    bos = backend.token_to_id("<s>")
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", bos)]
    )
    target = tmp_path / "llama_like"
    target.mkdir()
    backend.save(str(target / "tokenizer.json"))
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        if (sentencepiece_tokenizer_path / name).exists():
            (target / name).write_text((sentencepiece_tokenizer_path / name).read_text())
    tok = AutoTokenizer.from_pretrained(str(target))
    payload = load_tokenizer(target)
    assert payload.adds_bos
    options = ts.encode_options(payload, add_bos=True)
    docs = _documents(ts.tokenize_records([{"text": "hello there"}], payload, options, np.int32))
    assert docs == [tok("hello there")["input_ids"]] and docs[0][0] == bos and docs[0][1] != bos


def test_rejects_by_reason_in_input_order(byte_bpe_tokenizer_path):  # noqa: F811
    payload = load_tokenizer(byte_bpe_tokenizer_path)
    records = [
        {"text": "ok"},
        {"title": "no text"},
        {"text": ""},
        {"text": "  \n"},
        {"text": 3},
        {"text": None},
        {"text": "fine"},
    ]
    part = ts.tokenize_records(records, payload, ts.encode_options(payload), np.int32)
    assert part.documents == 2
    assert [r["reason"] for r in part.rejects] == [
        "missing_field",
        "empty_text",
        "empty_text",
        "not_text",
        "missing_field",
    ]
    assert part.rejected == {"empty_text": 2, "missing_field": 2, "not_text": 1}
    assert json.loads(part.rejects[0]["raw"]) == {"title": "no text"}


def test_other_field(byte_bpe_tokenizer_path):  # noqa: F811
    payload = load_tokenizer(byte_bpe_tokenizer_path)
    options = ts.encode_options(payload, field="content")
    part = ts.tokenize_records([{"content": "abc"}, {"text": "abc"}], payload, options, np.int32)
    assert part.documents == 1 and part.rejected == {"missing_field": 1}


def test_options_are_checked_together(tmp_path, byte_bpe_tokenizer_path):  # noqa: F811
    from tokenizers import Tokenizer, models, pre_tokenizers

    backend = Tokenizer(models.WordLevel({"a": 0, "b": 1, "[UNK]": 2}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.save(str(tmp_path / "tokenizer.json"))
    payload = load_tokenizer(tmp_path / "tokenizer.json")  # a bare file: no eos, no bos
    with pytest.raises(UserError, match="no eos token.*--eod-id.*no bos token.*--bos-id"):
        ts.encode_options(payload, append_eod=True, add_bos=True)
    with pytest.raises(UserError, match="--eod-id 9 is outside the vocabulary"):
        ts.encode_options(payload, append_eod=True, eod_id=9)
    assert ts.encode_options(payload, append_eod=True, eod_id=2).eod_id == 2


def test_bad_tokenizer_paths(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_tokenizer(tmp_path / "missing")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(UserError, match="cannot load tokenizer"):
        load_tokenizer(tmp_path / "broken.json")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="cannot load tokenizer|not a fast"):
        load_tokenizer(tmp_path / "empty")


def test_dtype_follows_megatron(byte_bpe_tokenizer_path):  # noqa: F811
    assert token_dtype_for_vocab(load_tokenizer(byte_bpe_tokenizer_path).vocab_size) == np.uint16
    assert token_dtype_for_vocab(65499) == np.uint16
    assert token_dtype_for_vocab(65500) == np.int32


def wide_tokenizer(directory: Path, vocab_size: int = 70000) -> Path:
    """A word-level tokenizer whose vocabulary does not fit uint16 (ids up to 69999)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"w{i}": i for i in range(vocab_size - 2)} | {
        "[UNK]": vocab_size - 2,
        "</s>": vocab_size - 1,
    }
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="[UNK]", eos_token="</s>"
    ).save_pretrained(str(directory))
    return directory


def test_wide_vocabulary_needs_int32(tmp_path):
    payload = load_tokenizer(wide_tokenizer(tmp_path / "wide"))
    assert payload.vocab_size == 70000 and token_dtype_for_vocab(payload.vocab_size) == np.int32
    options = ts.encode_options(payload, append_eod=True)
    part = ts.tokenize_records([{"text": "w69000 w1 w65535"}], payload, options, np.int32)
    assert part.tokens.tolist() == [69000, 1, 65535, 69999]
