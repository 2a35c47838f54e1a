"""A blended training run's datasets and weights, in each framework's own syntax.

A blend lists, per split, dataset prefixes and (optionally) their weights:

* megatron-core / Megatron-LM: ``--data-path W1 P1 W2 P2 …`` (every prefix split into
  train/valid/test by ``--split``, here ``--splits``), or per split ``--train-data-path``,
  ``--valid-data-path``, ``--test-data-path`` (each prefix used whole); weights may be left
  out (``--data-path P1 P2``: megatron-core then weighs by dataset length).
* GPT-NeoX: ``train_data_paths`` + ``train_data_weights`` and the same for valid and test (all
  three path lists are required, as GPT-NeoX asserts; omitted weights are ``1.0`` each).

:func:`read_neox_config` reads the keys a GPT-NeoX YAML config already has (the blend, and the
run's ``seq_length``, ``seed``, ``train_iters``, ``train_batch_size`` …); the same YAML with
only the blend keys is dexport's small "blend file".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.errors import UserError

SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class Blend:
    """Prefixes and weights per split (``None`` weights: the framework's default)."""

    convention: str
    train: tuple[str, ...] = ()
    valid: tuple[str, ...] = ()
    test: tuple[str, ...] = ()
    train_weights: tuple[float, ...] | None = None
    valid_weights: tuple[float, ...] | None = None
    test_weights: tuple[float, ...] | None = None
    # megatron's --data-path: the same prefixes for every split, each split into
    # train/valid/test documents by the run's splits string (False: each prefix used whole).
    shared_split: bool = False

    def prefixes(self, split: str) -> tuple[str, ...]:
        """The prefixes of ``split`` (empty when the run has no data for it)."""
        return getattr(self, split)

    def weights(self, split: str) -> tuple[float, ...] | None:
        """The weights of ``split`` as given (None when left out)."""
        return getattr(self, f"{split}_weights")

    def all_prefixes(self) -> list[str]:
        """Every prefix once, in order of first mention."""
        return list(dict.fromkeys(p for s in SPLITS for p in self.prefixes(s)))

    def check(self, split: str) -> None:
        """One UserError naming what keeps ``split`` of this blend from being built."""
        neox = self.convention == "neox"
        problems = []
        if neox and not all(self.prefixes(s) for s in SPLITS):
            missing = [f"{s}_data_paths" for s in SPLITS if not self.prefixes(s)]
            problems.append(
                f"a GPT-NeoX blend needs train, valid and test data paths (GPT-NeoX asserts all "
                f"three or none); {' and '.join(missing)} missing: pass --valid-data-paths and "
                "--test-data-paths as in the training config"
            )
        for s in SPLITS:
            prefixes, weights = self.prefixes(s), self.weights(s)
            flag = f"--{s}-data-weights" if neox else f"--{s}-data-path"
            if weights is not None and len(weights) != len(prefixes):
                problems.append(
                    f"{s}: {len(weights)} weights for {len(prefixes)} data paths; give one weight "
                    f"per path ({flag})"
                )
            elif weights is not None and not all(math.isfinite(w) and w > 0 for w in weights):
                problems.append(f"{s}: weights must be positive numbers, got {list(weights)}")
        if not problems and not self.prefixes(split):
            problems.append(
                f"the blend has no {split} data paths; choose --split among "
                f"{', '.join(s for s in SPLITS if self.prefixes(s))}"
            )
        if problems:
            raise UserError("; ".join(problems))

    def as_params(self) -> dict[str, Any]:
        """JSON-ready description (manifest parameters)."""
        out: dict[str, Any] = {"convention": self.convention}
        for s in SPLITS:
            out[s] = list(self.prefixes(s))
            out[f"{s}_weights"] = None if self.weights(s) is None else list(self.weights(s))
        out["shared_split"] = self.shared_split
        return out


def megatron_blend_list(values: Sequence[str], flag: str) -> tuple[tuple[str, ...], tuple | None]:
    """Megatron-LM's ``get_blend_from_list``: ``W1 P1 W2 P2 …`` or ``P1 P2 …``."""
    values = [str(v) for v in values]
    if len(values) % 2 == 0 and values:
        weights = [_float_or_none(v) for v in values[0::2]]
        if all(w is not None for w in weights):
            return tuple(v.strip() for v in values[1::2]), tuple(weights)  # type: ignore[arg-type]
        if any(w is not None for w in weights):
            raise UserError(
                f"{flag} {' '.join(values)} mixes weights and prefixes; write W1 P1 W2 P2 … or "
                "P1 P2 … (no weights)"
            )
    return tuple(v.strip() for v in values), None


def megatron_blend(
    data_path: Sequence[str] | None = None,
    *,
    train: Sequence[str] | None = None,
    valid: Sequence[str] | None = None,
    test: Sequence[str] | None = None,
) -> Blend:
    """A megatron blend from Megatron-LM's ``--data-path`` or ``--{split}-data-path`` values."""
    if data_path and (train or valid or test):
        raise UserError(
            "--data-path and --train/valid/test-data-path exclude each other (as in Megatron-LM); "
            "give one or the other"
        )
    if data_path:
        prefixes, weights = megatron_blend_list(data_path, "--data-path")
        return Blend("megatron", prefixes, prefixes, prefixes, weights, weights, weights, True)
    parts = {}
    for name, values in (("train", train), ("valid", valid), ("test", test)):
        prefixes, weights = megatron_blend_list(values or [], f"--{name}-data-path")
        parts[name], parts[f"{name}_weights"] = prefixes, weights
    return Blend("megatron", **parts)


def neox_blend(
    paths: dict[str, Sequence[str] | None], weights: dict[str, Sequence[float] | None]
) -> Blend:
    """A GPT-NeoX blend from ``{split}_data_paths`` / ``{split}_data_weights``."""
    parts: dict[str, Any] = {}
    for s in SPLITS:
        parts[s] = tuple(str(p) for p in paths.get(s) or ())
        given = weights.get(s)
        parts[f"{s}_weights"] = None if given is None else tuple(_weight(w) for w in given)
    return Blend("neox", **parts)


# -- GPT-NeoX YAML configs ---------------------------------------------------------------------
RUN_KEYS = ("seq_length", "seed", "train_iters", "train_batch_size", "eval_interval", "eval_iters")


def read_neox_config(paths: Sequence[str]) -> dict[str, Any]:
    """The keys dexport reads from GPT-NeoX YAML config file(s), merged as GPT-NeoX merges them.

    Returns ``blend`` (a :class:`Blend` or None), ``data_path``, ``split``, ``pack_impl``,
    ``allow_chopped`` and the :data:`RUN_KEYS` that are set. ``train_batch_size`` is taken as
    given, else ``train_micro_batch_size_per_gpu * gradient_accumulation_steps`` when the config
    says there is one data-parallel rank, else left to ``--batch-size``.
    """
    import yaml

    merged: dict[str, Any] = {}
    for path in paths:
        try:
            with open(path, encoding="utf-8") as handle:
                loaded = yaml.safe_load(handle)
        except OSError as exc:
            raise UserError(f"cannot read the config {path}: {exc.strerror or exc}") from None
        except yaml.YAMLError as exc:
            raise UserError(
                f"config {path} is not valid YAML: {str(exc).splitlines()[0]}"
            ) from None
        if not isinstance(loaded, dict):
            raise UserError(f"config {path} is not a mapping of keys to values")
        merged.update({str(k).replace("-", "_"): v for k, v in loaded.items()})
    if merged.get("weight_by_num_documents"):
        raise UserError(
            "weight_by_num_documents is not supported: give the weights explicitly in "
            "train/valid/test_data_weights"
        )
    if merged.get("train_epochs") is not None:
        raise UserError("train_epochs is not supported: give train_iters in the config")
    out: dict[str, Any] = {k: merged[k] for k in RUN_KEYS if merged.get(k) is not None}
    if "train_batch_size" not in out:
        micro = merged.get("train_micro_batch_size_per_gpu")
        dp = merged.get("data_parallel_size") or merged.get("data_parallel_world_size")
        if micro is not None and dp == 1:
            out["train_batch_size"] = int(micro) * int(
                merged.get("gradient_accumulation_steps") or 1
            )
    for key in ("data_path", "split", "pack_impl", "allow_chopped"):
        if merged.get(key) is not None:
            out[key] = merged[key]
    paths_given = {s: merged.get(f"{s}_data_paths") for s in SPLITS}
    out["blend"] = None
    if any(paths_given.values()):
        out["blend"] = neox_blend(
            {s: _string_list(v, f"{s}_data_paths") for s, v in paths_given.items()},
            {s: merged.get(f"{s}_data_weights") for s in SPLITS},
        )
    return out


def _string_list(value: Any, key: str) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list):
        raise UserError(f"{key} must be a list of dataset prefixes, got {value!r}")
    return [str(v) for v in value]


def _float_or_none(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _weight(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise UserError(f"weight {value!r} is not a number") from None
