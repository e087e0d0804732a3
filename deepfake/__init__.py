"""deepfake: reproducible detection of forged and synthetic face images."""

__version__ = "0.1.0"
