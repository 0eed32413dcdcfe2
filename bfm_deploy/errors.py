"""The one exception type users see.

Every expected failure (bad input, a mismatching manifest, a missing backend) raises ``BfmError`` with a
message that fits on one line; command-line tools print it and exit 2 (see ``bfm_deploy.cli_support``).
"""


# How to get what an optional feature needs: every "missing extra" message names one of these.
TRAIN_EXTRA = "pip install 'bfm[train]' (from a checkout: pip install -e '.[train]')"
GPU_EXTRA = "pip install 'bfm[gpu]'"


class BfmError(Exception):
    """An expected failure with a one-line, user-facing message."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


class NoFaceError(BfmError):
    """No face was found in an image (a detector's answer, or the masker's on a raw photo; an aligned crop is a
    face by definition)."""
