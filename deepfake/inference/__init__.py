"""Scoring new inputs: the predictor (``predict``) with its settings, inputs and results
(``prediction``), its runtimes (``backends``: eager, TorchScript, int8), Grad-CAM (``gradcam``),
the command line's output (``cli_output``) and the demo widget (``widgets``).

May import the layers below it, ``core`` to ``evaluation`` (today it needs nothing of ``evaluation``).
"""
