"""scratchcap: attention image captioning written from scratch on NumPy (CuPy optional)."""
__version__ = "0.1.0"
