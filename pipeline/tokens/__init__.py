"""Token export: what a model saw, as records, in the training run's exact sample order.

Order of work: ``source`` opens the dataset (``formats.indexed_dataset``) and loads or builds the
sample order (``neox_index``/``megatron_index``, cached as the frameworks name their files);
``selection`` turns ``--batches``/``--sequence-range``/… into sample ids and chunks; ``job`` plans
one task per chunk (token ranges only), and each task gathers its windows, detokenizes them and
writes ``part-{k:05d}.<format>`` plus its progress record; finalize writes ``_manifest.json`` last
(or joins the parts into the one file ``--out`` names). ``api`` is the TokenSmith-compatible
``DatasetManager``.
"""
