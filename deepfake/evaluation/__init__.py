"""Evaluation of a trained checkpoint: the evaluate stage's measurements (``evaluate``), image
perturbations for robustness (``robustness``), the report tables (``tables``) and the figures
(``plots``).

May import every layer below it: ``core``, ``data``, ``metrics``, ``models``, ``training``.
"""
