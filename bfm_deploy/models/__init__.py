"""The paper's networks as torch modules: ArcFace IResNets and MobileFaceNet extractors, the mask classifier.

Shared by training (``bfm_train``) and the runtime's torch backend; importing this package needs torch, so
nothing in ``bfm_deploy`` imports it except where torch is the point (the torch backend, ``bfm-bench --flops``).

    from bfm_deploy.models import get_model, model_info, load_pretrained
    net = get_model("r50")                     # fresh IResNet-50, 112x112 RGB (x-127.5)/127.5 -> 512-d
    model_info("classifier").macs              # 7025664
    load_pretrained(get_model("mbf"), "w600k_mbf")   # insightface weights, non-commercial research only
"""

from .classifier import MASKED, UNMASKED, MaskClassifier
from .iresnet import IResNet
from .macs import count_macs, count_params
from .mobilefacenet import MobileFaceNet
from .pretrained import W600K_MBF, W600K_MBF_LICENCE, load_pretrained, load_state_dict_checked, w600k_mbf_path
from .registry import ModelInfo, get_model, list_models, model_info

__all__ = [
    "IResNet",
    "MASKED",
    "MaskClassifier",
    "MobileFaceNet",
    "ModelInfo",
    "UNMASKED",
    "W600K_MBF",
    "W600K_MBF_LICENCE",
    "count_macs",
    "count_params",
    "get_model",
    "list_models",
    "load_pretrained",
    "load_state_dict_checked",
    "model_info",
    "w600k_mbf_path",
]
