"""``bfm-train``: typed configs, the paper's recipes (bfm, baseline1, baseline2) and a resumable trainer."""

from .config import TrainConfig, config_from_dict, load_config
from .trainer import Trainer, find_latest_checkpoint, train

__all__ = ["TrainConfig", "Trainer", "config_from_dict", "find_latest_checkpoint", "load_config", "train"]
