"""bfm runtime: mask-routed face verification on ONNX Runtime, TensorRT or PyTorch.

This package must import without torch installed.
"""

__version__ = "0.1.0"
