"""FP16 TensorRT engines for a model bundle: ``bfm-build-engine`` and the engine manifest.

``spec`` and ``sources`` are pure Python; ``loaders`` and ``build`` import tensorrt and are only imported
after ``availability.require_tensorrt()`` has succeeded.
"""
