"""The paper's networks as torch modules, shared by training and the runtime's torch backend (timm's role).

    from bfm_models import create_model, list_models, model_info
    net = create_model("r50")                        # fresh IResNet-50, 112x112 RGB (x-127.5)/127.5 -> 512-d
    model_info("classifier").macs                    # 7025664
    create_model("mbf", pretrained="w600k_mbf")      # insightface weights, non-commercial research only

Each architecture file registers its builders with ``@register_model`` (importing this package imports them
all). The package needs torch; ``bfm_deploy`` imports it only where torch is the point (the torch backend,
``bfm-bench --flops``), and it imports nothing of ``bfm_deploy`` but the contract's lowest layer.
"""

from . import iresnet, mobilefacenet, classifier  # noqa: F401  (registered in this order)
from .classifier import MASKED, UNMASKED, MaskClassifier
from .iresnet import IResNet
from .macs import count_macs, count_params
from .mobilefacenet import MobileFaceNet
from .pretrained import W600K_MBF, W600K_MBF_LICENCE, load_pretrained, load_state_dict_checked, w600k_mbf_path
from .factory import create_model
from .registry import MODELS, ModelEntry, ModelInfo, list_models, model_info, register_model

__all__ = [
    "IResNet",
    "MASKED",
    "MODELS",
    "MaskClassifier",
    "MobileFaceNet",
    "ModelEntry",
    "ModelInfo",
    "UNMASKED",
    "W600K_MBF",
    "W600K_MBF_LICENCE",
    "count_macs",
    "count_params",
    "create_model",
    "list_models",
    "load_pretrained",
    "load_state_dict_checked",
    "model_info",
    "register_model",
    "w600k_mbf_path",
]
