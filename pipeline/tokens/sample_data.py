"""Sample data the demo makes itself: a small corpus, a byte-level BPE tokenizer trained on it
(no model hub needed) and the tokenized Megatron dataset."""

from __future__ import annotations

import os

import numpy as np

from pipeline.formats.indexed_dataset import IndexedDatasetBuilder, token_dtype_for_vocab

WORDS = (
    "the model data token batch training corpus sample window document export cluster worker "
    "partition text order seed epoch shard index parquet json bytes loss step learning rate "
    "attention layer gradient optimizer checkpoint evaluation validation split dataset card "
    "café naïve résumé Zürich 東京 数据 データ 🚀 ✓ — “quoted” it's don't"
).split()


def make_corpus(n_docs: int, seed: int = 0) -> list[str]:
    """Deterministic pseudo-text documents of varied length (with some non-ASCII)."""
    rng = np.random.default_rng(seed)
    docs = []
    for _ in range(n_docs):
        n_sent = int(rng.integers(1, 12))
        sentences = []
        for _ in range(n_sent):
            words = rng.choice(WORDS, size=int(rng.integers(4, 18)))
            sentences.append(" ".join(words).capitalize() + rng.choice([".", "!", "?"]))
        docs.append(" ".join(sentences))
    return docs


def train_tokenizer(texts: list[str], out_dir: str, vocab_size: int = 2048) -> str:
    """Train a GPT-2-style byte-level BPE and save it as a Hugging Face tokenizer folder."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>"
    )
    fast.save_pretrained(out_dir)
    return out_dir


def make_token_dataset(out_dir: str, n_docs: int = 2000, seed: int = 0) -> tuple[str, str]:
    """Write ``out_dir/tokenizer`` and ``out_dir/data/corpus.{bin,idx}``; return (prefix,
    tokenizer)."""
    from transformers import AutoTokenizer

    texts = make_corpus(n_docs, seed)
    tok_dir = train_tokenizer(texts[: min(500, n_docs)], os.path.join(out_dir, "tokenizer"))
    tokenizer = AutoTokenizer.from_pretrained(tok_dir)
    prefix = os.path.join(out_dir, "data", "corpus")
    os.makedirs(os.path.dirname(prefix), exist_ok=True)
    builder = IndexedDatasetBuilder(prefix, token_dtype_for_vocab(len(tokenizer)))
    eod = tokenizer.eos_token_id
    for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]:
        builder.add_document(np.asarray([*ids, eod]))
    builder.finalize()
    return prefix, tok_dir
