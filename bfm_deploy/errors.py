"""The one exception type users see, and the kinds of it that say whose fault a failure is.

Every expected failure (bad input, a mismatching manifest, a missing backend) raises ``BfmError`` with a
message that fits on one line; command-line tools print it and exit 2 (see ``bfm_deploy.cli_support``).
Where the caller's next step depends on whose fault it is (bfm-serve answers 4xx for the first, 5xx for the
second), a subclass says so: ``InputError`` for input that cannot be used, ``BackendError`` for an inference
runtime that failed on input it should have taken. A plain ``BfmError`` is read as bad input.
"""


class BfmError(Exception):
    """An expected failure with a one-line, user-facing message."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


class InputError(BfmError):
    """The input cannot be used as it is (a malformed request, an unreadable image, a face that is not there):
    sending it again changes nothing."""


class NoFaceError(InputError):
    """No face was found in an image (a detector's answer, or the masker's on a raw photo; an aligned crop is a
    face by definition)."""


class BackendError(BfmError):
    """The inference runtime failed while running a network on well-formed input (onnxruntime's run, a GPU
    fault, memory it could not get): the service's fault, not the caller's."""
