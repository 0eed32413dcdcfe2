"""bfm training side (needs PyTorch): the paper's networks, losses, synthetic masks and trainer."""

from bfm_deploy import __version__  # noqa: F401  (one version for the one distribution)
