"""The DVC pipeline's plumbing: the whole params file checked at once (``params``), the dataset's
inventory that DVC depends on instead of the dataset folder (``inventory``), the stage
functions the notebooks call (``stages``), the papermill stage runner (``runner``), DVCLive
tracking and each stage's headline metrics (``tracking``), the quick-check fixtures behind the
notebooks' defaults and the tests (``quick``) and helpers for exploring a run by hand
(``explore``).

The top floor: may import every other sub-package.
"""
