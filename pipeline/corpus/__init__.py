"""Corpus export: curated documents → the training schema, split train/validation/test.

Order of work: ``job`` checks the spec and plans input partitions (``io.records``); with exact
counts a first pass ranks record hashes; each task (``partition``) maps one partition to the
schema, validates it (rejects aside with their reason), assigns splits by hash and writes one
part per split plus its rejects (``writers``); ``finalize`` joins the parts into ``train.jsonl``
… (unless ``--parts``), then writes ``dataset_stats.json``, the dataset card (``card``) and
``_manifest.json`` last. ``api.export_corpus`` is the Python entry point.
"""
