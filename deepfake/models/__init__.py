"""Networks and their files: the architectures and their pretrained weights (``architectures``) and
checkpoints, written atomically and read weights-only with their preprocessing contract
(``checkpoint``).

May import ``deepfake.core``, ``deepfake.data`` and ``deepfake.metrics``.
"""
