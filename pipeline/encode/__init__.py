"""Encode: text records → tokens → one Megatron dataset (``PREFIX.bin`` + ``PREFIX.idx``) or NPZ.

Order of work: ``job`` checks the spec, loads the tokenizer once (``formats.tokenizer``) and plans
input partitions; each task tokenizes one partition (``tokenize``) and writes shard ``i`` (``.bin``
+ ``.idx``, or ``part-i.npz``) and its rejects into ``PREFIX.shards/``; ``merge`` concatenates the
shard ``.bin`` files, streams one ``.idx``, joins the rejects and writes ``PREFIX.manifest.json``
last, then removes the staging folder. ``api.encode_corpus`` is the Python entry point.
"""
