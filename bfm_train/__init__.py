"""bfm training side (needs PyTorch): the paper's networks, losses, synthetic masks and trainer."""

__version__ = "0.1.0"
