"""Real fast tokenizers for tests, built offline in seconds.

Plain functions build a tokenizer directory that ``AutoTokenizer.from_pretrained(dir)`` loads
without a network; the pytest fixtures at the end wrap them (session scope, built once).
A conftest can expose the fixtures with ``from tokenizers_fixtures import *  # noqa``.

- :func:`byte_bpe_tokenizer_dir`: GPT-2-style byte-level BPE trained here on generated
  multilingual text, with ``<|endoftext|>`` (special), a special ``<|pad|>`` and added
  non-special tokens (one made of byte-alphabet characters, one plain UTF-8).
- :func:`sentencepiece_tokenizer_dir`: Llama/Mistral-style BPE trained here, with byte fallback
  (``<0x00>``..``<0xFF>`` in the vocabulary) and the Llama decoder chain
  (Replace ``▁``, ByteFallback, Fuse, Strip one leading space).
- :func:`wordpiece_tokenizer_dir`: BERT-style WordPiece trained here
  (``clean_up_tokenization_spaces`` on).
- :func:`mistral_tokenizer_dir`: Mistral-7B's real SentencePiece model (``tokenizer.model.v1``
  shipped by the ``mistral-common`` package), converted to a fast tokenizer.
- :func:`tekken_tokenizer_dir`: Mistral's real tiktoken-style byte-level BPE (``tekken_*.json``
  from ``mistral-common``, 131k tokens), converted to a Hugging Face byte-level BPE.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import random
from collections.abc import Callable
from pathlib import Path

import pytest

# Nothing here may reach a model hub: every tokenizer is built from local files.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

_ASCII_WORDS = (
    "the of and to in is was for on that with as by it at from his an were are which this "
    "be or has had not but first one their its new after who they two her she been other "
    "when there all during into school time may years more most only over city some world "
    "would where later up such used many can state about national out known university "
    "don't it's I'm we've they're x y ' . , ? ! ( ) [ ] { } \" ; : - -- _ / \\ @ # $ % ^ & * + = ~"
).split()
_ACCENTED_WORDS = (
    "café naïve résumé über Ärger Straße façade São Paulo Zürich niño año jalapeño crème "
    "brûlée Ελλάδα Αθήνα Москва привет мир ça déjà vu Łódź Kraków żółw İstanbul ğüşöç"
).split()
_CJK = "日本語の文章を書きます。東京都中国北京市한국어로된문장입니다漢字仮名交じり文"
_EMOJI = "🙂😀🎉🚀👍🏽👨‍👩‍👧‍👦🇫🇷❤️✨🤖🧪🌍"
_RARE = "ꙮ𝔘𝔫𝔦𝔠𝔬𝔡𝔢𐍈𓀀ℵ∑∫≠≤→⇒€£¥₿§¶†‡‰"


def multilingual_text(n_lines: int = 2000, seed: int = 0) -> list[str]:
    """Return ``n_lines`` deterministic lines mixing ASCII, accents, CJK, emoji and rare scripts."""
    rng = random.Random(seed)
    lines = []
    for _ in range(n_lines):
        parts = []
        for _ in range(rng.randint(3, 30)):
            r = rng.random()
            if r < 0.55:
                parts.append(rng.choice(_ASCII_WORDS))
            elif r < 0.75:
                parts.append(rng.choice(_ACCENTED_WORDS))
            elif r < 0.87:
                start = rng.randrange(len(_CJK) - 4)
                parts.append(_CJK[start : start + rng.randint(1, 4)])
            elif r < 0.94:
                parts.append("".join(rng.choice(_EMOJI) for _ in range(rng.randint(1, 3))))
            elif r < 0.97:
                parts.append(rng.choice(_RARE))
            else:
                parts.append(str(rng.randint(0, 100000)))
        sep = rng.choice([" ", " ", " ", "  ", "\t", "\n", " \n"])
        lines.append(sep.join(parts) if rng.random() < 0.3 else " ".join(parts))
    return lines


def _save_fast(tokenizer_object, directory: Path, **kwargs) -> Path:
    """Wrap a ``tokenizers.Tokenizer`` as a transformers fast tokenizer and save it."""
    from transformers import PreTrainedTokenizerFast

    hf = PreTrainedTokenizerFast(tokenizer_object=tokenizer_object, **kwargs)
    directory.mkdir(parents=True, exist_ok=True)
    hf.save_pretrained(str(directory))
    return directory


def byte_bpe_tokenizer_dir(tmp: Path, vocab_size: int = 1500) -> Path:
    """Build a GPT-2-style byte-level BPE in ``tmp/byte_bpe`` and return the directory.

    Special: ``<|endoftext|>`` (id 0, eos/bos) and ``<|pad|>``. Added non-special tokens:
    ``<|sep|>`` and ``Ġcafé`` (only byte-alphabet characters: decodes byte by byte, giving
    invalid UTF-8 for ``é``), ``日本語テキスト`` (outside the alphabet: decodes as UTF-8).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(multilingual_text(3000, seed=1), trainer=trainer)
    tok.add_tokens(["<|sep|>", "Ġcafé", "日本語テキスト"])
    tok.add_special_tokens(["<|pad|>"])
    return _save_fast(
        tok,
        tmp / "byte_bpe",
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        pad_token="<|pad|>",
    )


def _byte_fallback_vocab(trained_vocab: dict[str, int], specials: list[str]) -> dict[str, int]:
    """Llama layout: specials, then the 256 ``<0xNN>`` byte pieces, then the trained pieces."""
    vocab: dict[str, int] = {}
    for piece in [*specials, *(f"<0x{b:02X}>" for b in range(256))]:
        vocab[piece] = len(vocab)
    for piece, _ in sorted(trained_vocab.items(), key=lambda kv: kv[1]):
        if piece not in vocab:
            vocab[piece] = len(vocab)
    return vocab


def sentencepiece_tokenizer_dir(tmp: Path, vocab_size: int = 800, name: str = "sp_bpe") -> Path:
    """Build a Llama/Mistral-style BPE with byte fallback in ``tmp/name``.

    The vocabulary is small on purpose, so rare characters (CJK, emoji) fall back to
    ``<0xNN>`` byte pieces often. Specials: ``<unk>``, ``<s>``, ``</s>``; added non-special
    ``<|tool|>`` and ``▁extra▁piece`` (whose ``▁`` the decoder turns into spaces).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    specials = ["<unk>", "<s>", "</s>"]
    base = Tokenizer(models.BPE(unk_token="<unk>"))
    base.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=2, special_tokens=specials, show_progress=False
    )
    base.train_from_iterator(multilingual_text(3000, seed=2), trainer=trainer)
    trained = json.loads(base.to_str())["model"]
    vocab = _byte_fallback_vocab(trained["vocab"], specials)
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in trained["merges"]]
    model = models.BPE(
        vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True
    )
    tok = Tokenizer(model)
    tok.pre_tokenizer = pre_tokenizers.Metaspace(
        replacement="▁", prepend_scheme="first", split=False
    )
    tok.decoder = decoders.Sequence(
        [
            decoders.Replace("▁", " "),
            decoders.ByteFallback(),
            decoders.Fuse(),
            decoders.Strip(content=" ", left=1, right=0),
        ]
    )
    tok.add_special_tokens(specials)
    tok.add_tokens(["<|tool|>", "▁extra▁piece"])
    return _save_fast(tok, tmp / name, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def wordpiece_tokenizer_dir(tmp: Path, vocab_size: int = 1200) -> Path:
    """Build a BERT-style WordPiece (uncased, ``##`` continuation) in ``tmp/wordpiece``."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=specials, show_progress=False
    )
    tok.train_from_iterator(multilingual_text(2000, seed=3), trainer=trainer)
    tok.add_tokens(["[unused_added]"])
    return _save_fast(
        tok,
        tmp / "wordpiece",
        unk_token="[UNK]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        mask_token="[MASK]",
        clean_up_tokenization_spaces=True,
    )


def _mistral_common_data(name: str) -> Path | None:
    spec = importlib.util.find_spec("mistral_common")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "data" / name
    return path if path.is_file() else None


def mistral_tokenizer_dir(tmp: Path) -> Path | None:
    """Convert Mistral-7B's ``tokenizer.model.v1`` to a fast tokenizer in ``tmp/mistral``.

    Returns None when ``mistral-common`` (or sentencepiece/protobuf, needed to read the
    model) is not installed.
    """
    source = _mistral_common_data("tokenizer.model.v1")
    if source is None or importlib.util.find_spec("sentencepiece") is None:
        return None
    from transformers import LlamaTokenizer

    raw = tmp / "mistral_sp"
    raw.mkdir(parents=True, exist_ok=True)
    (raw / "tokenizer.model").write_bytes(source.read_bytes())
    tok = LlamaTokenizer.from_pretrained(str(raw))
    out = tmp / "mistral"
    tok.save_pretrained(str(out))
    return out


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map (the byte-level alphabet)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    mapping = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


def tekken_tokenizer_dir(tmp: Path, version: str = "240718") -> Path | None:
    """Convert Mistral's tiktoken-style ``tekken_{version}.json`` to a HF byte-level BPE.

    Layout as Mistral-Nemo: 1000 special tokens (``<unk>``, ``<s>``, ``</s>``, ``[INST]``,
    ``[/INST]``, then ``<SPECIAL_n>``) followed by the ranked byte tokens. Merges are derived
    from the ranks (each token of two or more bytes gets one split into two lower-ranked
    tokens). Returns None when ``mistral-common`` is not installed.
    """
    source = _mistral_common_data(f"tekken_{version}.json")
    if source is None:
        return None
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    spec = json.loads(source.read_text(encoding="utf-8"))
    config = spec["config"]
    n_special = int(config["default_num_special_tokens"])
    n_ranked = int(config["default_vocab_size"]) - n_special
    ranks = {base64.b64decode(t["token_bytes"]): t["rank"] for t in spec["vocab"][:n_ranked]}
    byte_map = _bytes_to_unicode()

    def as_piece(raw: bytes) -> str:
        return "".join(byte_map[b] for b in raw)

    named = ["<unk>", "<s>", "</s>", "[INST]", "[/INST]"]
    specials = named + [f"<SPECIAL_{i}>" for i in range(len(named), n_special)]
    vocab = {as_piece(raw): rank + n_special for raw, rank in ranks.items()}
    merges = []
    for raw, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        best = None
        for cut in range(1, len(raw)):
            left, right = ranks.get(raw[:cut]), ranks.get(raw[cut:])
            if left is not None and right is not None and left < rank and right < rank:
                key = max(left, right)
                if best is None or key < best[0]:
                    best = (key, raw[:cut], raw[cut:])
        if best is not None:
            merges.append((as_piece(best[1]), as_piece(best[2])))
    model = models.BPE(vocab=vocab, merges=merges, ignore_merges=True)
    tok = Tokenizer(model)
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(config["pattern"]), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    # Specials take ids 0..999, which the ranked tokens leave free.
    from tokenizers import AddedToken

    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    return _save_fast(
        tok, tmp / f"tekken_{version}", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )


def _session_dir(factory: pytest.TempPathFactory, build: Callable[[Path], Path | None]) -> Path:
    path = build(factory.mktemp("tokenizers"))
    if path is None:
        pytest.skip("mistral-common is not installed (it ships the real tokenizer files)")
    return path


@pytest.fixture(scope="session")
def byte_bpe_tokenizer_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Directory of the GPT-2-style byte-level BPE (see :func:`byte_bpe_tokenizer_dir`)."""
    return _session_dir(tmp_path_factory, byte_bpe_tokenizer_dir)


@pytest.fixture(scope="session")
def sentencepiece_tokenizer_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Directory of the Llama-style byte-fallback BPE (see :func:`sentencepiece_tokenizer_dir`)."""
    return _session_dir(tmp_path_factory, sentencepiece_tokenizer_dir)


@pytest.fixture(scope="session")
def wordpiece_tokenizer_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Directory of the BERT-style WordPiece (see :func:`wordpiece_tokenizer_dir`)."""
    return _session_dir(tmp_path_factory, wordpiece_tokenizer_dir)


@pytest.fixture(scope="session")
def mistral_tokenizer_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Directory of Mistral-7B's real tokenizer (skips without ``mistral-common``)."""
    return _session_dir(tmp_path_factory, mistral_tokenizer_dir)


@pytest.fixture(scope="session")
def tekken_tokenizer_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Directory of Mistral's real tekken byte-level BPE (skips without ``mistral-common``)."""
    return _session_dir(tmp_path_factory, tekken_tokenizer_dir)
