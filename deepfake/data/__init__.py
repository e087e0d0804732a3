"""Everything between a dataset on disk and the stored face crops and splits.

Decoding (``media`` for images, ``video`` for sampled frames), listing a dataset in any layout
(``ingest``: folders and manifests; ``layouts``: the benchmarks as their downloads lay them out,
behind the one ``scan_dataset`` interface, with the official FaceForensics++ split in
``splits/ffpp/``), the embedded synthetic dataset (``synth``), faces (``detect``: the detectors and
landmark predictors; ``faces``: the crop, its steps in order; ``inputs``: the
preprocessing contract every scoring path shares and the model-input tensors), the preprocess
stage (``preprocess``), leakage-free splits and the dataset index (``split``) and the leakage and
shortcut audits (``audit``, ``shortcuts``).

May import ``deepfake.core`` only.
"""
