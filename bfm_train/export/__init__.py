"""bfm-export: training checkpoint (or pretrained weights) -> model bundle (ONNX graphs + manifest.json).

    from bfm_train.export import ExportOptions, export_bundle
    export_bundle("runs/bfm/last.safetensors", ExportOptions(name="demo", calibrate="pairs.txt"))
"""

from .exporter import export_bundle, export_source
from .options import ExportOptions, parse_thresholds
from .source import ExportSource, load_source

__all__ = ["ExportOptions", "ExportSource", "export_bundle", "export_source", "load_source", "parse_thresholds"]
