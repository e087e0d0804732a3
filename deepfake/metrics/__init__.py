"""Scores and their measures: classification metrics with group-bootstrap intervals
(``classification``), temperature scaling and the calibration file (``calibration``) and
video-level results (``video_level``).

Below training, whose validation uses them. May import ``deepfake.core`` and ``deepfake.data``.
"""
