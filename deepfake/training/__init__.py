"""Training: the data loader (``loading``), augmentation (``augment``), self-blended pseudo-fakes
(``blend``), the batch-inference loop every scoring path shares (``scoring``), the optimisation
step (``steps``), ``torchrun`` helpers (``distributed``), resuming (``resume``) and the training
entry point (``train``).

May import ``deepfake.core``, ``data``, ``metrics`` and ``models``.
"""
