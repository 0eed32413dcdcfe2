"""``bfm-bench --flops``: parameters, MACs and FLOPs of C, E_F and E_P, counted two independent ways.

1. PyTorch's FLOP counter on the module (``bfm_models.count_macs``: FlopCounterMode, MACs = FLOPs / 2);
2. our own walk over the exported ONNX graph (``onnx_macs.count_onnx_macs``).

FLOPs are reported as 2 x MACs (one multiply and one add per MAC, conv and linear layers only), the
convention under which "FLOPs" and "MACs" differ by exactly two. The paper (Section IV-B) prints 70.7M FLOPs
for the classifier and 6.3G FLOPs per extractor; ``findings`` says which unit the measurement supports.
torch is imported here only, and only when ``--flops`` runs.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..contract import INPUT_SHAPE
from ..bundle import MIN_OPSET
from ..errors import BfmError
from ..optional import install_hint
from .onnx_macs import COUNTED_OPS, count_onnx_macs

#: Section IV-B of the paper: "only 70.7M FLOPs, whereas ... 6.3G FLOPs regardless of which of the four
#: feature extractors" (ResNet-50 for E_F and E_P).
PAPER_CLASSIFIER_FLOPS = 70.7e6
PAPER_EXTRACTOR_FLOPS = 6.3e9
PAPER_BACKBONE = "r50"
PAPER_SOURCE = "Section IV-B: 'only 70.7M FLOPs, whereas the computational cost of feature extraction is 6.3G FLOPs'"

# A printed figure "matches" a measured one when it is the measured value rounded to the printed digits.
_MATCH_TOLERANCE = 0.02


@dataclass(frozen=True)
class NetworkCost:
    architecture: str
    params: int
    macs: int  # PyTorch FlopCounterMode / 2, one 112x112 image
    flops: int  # 2 x macs
    macs_onnx: int  # our ONNX graph walk, one 112x112 image
    params_onnx: int  # float initialisers of the exported graph (BatchNorm may be folded into convs)
    onnx_uncounted_ops: dict[str, int]

    @property
    def agree(self) -> bool:
        return self.macs == self.macs_onnx


def _torch_models() -> Any:
    try:
        import bfm_models as models
        from bfm_models import onnx_export
    except ImportError as exc:
        raise BfmError(f"--flops needs torch and onnx: {install_hint('train')} ({exc})") from None
    return models, onnx_export


def count_network(architecture: str, workdir: Path) -> NetworkCost:
    """Both counts for one registry architecture, on a freshly built (randomly initialised) instance."""
    models, onnx_export = _torch_models()
    info = models.model_info(architecture)  # validates the name with a one-line error
    model = models.create_model(architecture).eval()
    macs = models.count_macs(model, (1, *info.input_size))
    onnx_path = workdir / f"{architecture}.onnx"
    onnx_export.export_onnx(model, onnx_path, info.output_name, MIN_OPSET)  # the exporter bfm-export uses
    onnx_count = count_onnx_macs(onnx_path, batch=1)
    return NetworkCost(
        architecture=architecture,
        params=models.count_params(model),
        macs=macs,
        flops=2 * macs,
        macs_onnx=onnx_count.macs,
        params_onnx=onnx_count.params,
        onnx_uncounted_ops=onnx_count.uncounted,
    )


def _compare(label: str, claimed: float, cost: NetworkCost) -> dict[str, Any]:
    """How a printed FLOP figure relates to the measured MACs and FLOPs, in numbers and in one sentence."""
    vs_macs = claimed / cost.macs
    vs_flops = claimed / cost.flops
    if abs(vs_flops - 1) <= _MATCH_TOLERANCE:
        verdict = f"the paper's {_si(claimed)} FLOPs for {label} matches the measured FLOPs ({_si(cost.flops)})"
    elif abs(vs_macs - 1) <= _MATCH_TOLERANCE:
        verdict = (
            f"the paper's {_si(claimed)} 'FLOPs' for {label} matches the measured MACs ({_si(cost.macs)}), "
            f"not FLOPs ({_si(cost.flops)}): the figure counts multiply-accumulates"
        )
    else:
        verdict = (
            f"the paper's {_si(claimed)} FLOPs for {label} matches neither the measured MACs ({_si(cost.macs)}, "
            f"claim = {vs_macs:.2f}x) nor FLOPs ({_si(cost.flops)}, claim = {vs_flops:.2f}x)"
        )
        if abs(vs_macs / 10 - 1) <= _MATCH_TOLERANCE:
            verdict += (
                f"; the architecture as specified costs about a tenth of the printed figure "
                f"({_si(cost.macs)} MACs, {_si(cost.flops)} FLOPs)"
            )
    return {"claimed_flops": claimed, "claimed_over_macs": vs_macs, "claimed_over_flops": vs_flops, "finding": verdict}


def _si(value: float) -> str:
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.2f}{suffix}"
    return f"{value:.0f}"


def flops_report(backbone: str = "r50", progress: bool = True) -> dict[str, Any]:
    """The ``--flops`` JSON: per network params/macs/flops/macs_onnx, the paper's claim and the findings.

    E_F and E_P share the backbone architecture, so it is built, counted and exported once.
    """
    from ..progress import progress as progress_bar

    models, onnx_export = _torch_models()
    if backbone not in models.list_models() or models.model_info(backbone).kind != "extractor":
        extractors = [n for n in models.list_models() if models.model_info(n).kind == "extractor"]
        raise BfmError(f"unknown backbone {backbone!r}; choose one of {', '.join(extractors)}")
    with tempfile.TemporaryDirectory(prefix="bfm-bench-flops-") as tmp:
        costs = {}
        for arch in progress_bar(["classifier", backbone], desc="count (torch + onnx)", enabled=progress):
            costs[arch] = count_network(arch, Path(tmp))
    classifier, extractor = costs["classifier"], costs[backbone]
    report_models = {
        name: {
            "params": cost.params,
            "macs": cost.macs,
            "flops": cost.flops,
            "macs_onnx": cost.macs_onnx,
            **{k: v for k, v in asdict(cost).items() if k not in ("params", "macs", "flops", "macs_onnx")},
        }
        for name, cost in (("classifier", classifier), ("full", extractor), ("partial", extractor))
    }
    paper: dict[str, Any] = {
        "classifier_flops": PAPER_CLASSIFIER_FLOPS,
        "extractor_flops": PAPER_EXTRACTOR_FLOPS,
        "extractor_backbone": PAPER_BACKBONE,
        "source": PAPER_SOURCE,
        "classifier": _compare("the classifier", PAPER_CLASSIFIER_FLOPS, classifier),
    }
    if backbone == PAPER_BACKBONE:
        paper["extractor"] = _compare("each ResNet-50 extractor", PAPER_EXTRACTOR_FLOPS, extractor)
    else:
        paper["extractor"] = {
            "claimed_flops": PAPER_EXTRACTOR_FLOPS,
            "finding": f"the paper's 6.3G refers to ResNet-50; {backbone} is not comparable (run --backbone r50)",
        }
    findings = [paper["classifier"]["finding"], paper["extractor"]["finding"]]
    findings.append(
        f"routing cost: the classifier adds {classifier.macs / extractor.macs:.2%} of one {backbone} extraction "
        f"({_si(classifier.macs)} vs {_si(extractor.macs)} MACs per face)"
    )
    for name, cost in (("classifier", classifier), (backbone, extractor)):
        if not cost.agree:
            findings.append(
                f"{name}: the torch count ({cost.macs}) and the ONNX count ({cost.macs_onnx}) differ by "
                f"{cost.macs_onnx - cost.macs} MACs"
            )
    return {
        "backbone": backbone,
        "input": [1, *INPUT_SHAPE],
        "counting": {
            "macs": "torch.utils.flop_counter.FlopCounterMode on the module (bfm_models.count_macs), FLOPs / 2",
            "flops": "2 x macs (conv and linear layers; bias, BatchNorm, activations and additions not counted)",
            "macs_onnx": f"own walk over the exported ONNX graph with onnx shape inference; counted ops: "
            f"{', '.join(COUNTED_OPS)}",
            "shared_architecture": "full and partial share the backbone: counted and exported once",
        },
        "models": report_models,
        "paper": paper,
        "findings": findings,
    }


def format_flops_table(report: dict[str, Any]) -> str:
    rows = [f"{'network':<11} {'arch':<11} {'params':>12} {'MACs (torch)':>14} {'MACs (onnx)':>14} {'FLOPs':>14}"]
    for name, m in report["models"].items():
        rows.append(
            f"{name:<11} {m['architecture']:<11} {m['params']:>12,} {m['macs']:>14,} {m['macs_onnx']:>14,} "
            f"{m['flops']:>14,}"
        )
    rows.append("")
    rows.append(
        f"paper: classifier {_si(report['paper']['classifier_flops'])} FLOPs, "
        f"extractor {_si(report['paper']['extractor_flops'])} FLOPs (ResNet-50)"
    )
    rows += [f"- {finding}" for finding in report["findings"]]
    return "\n".join(rows)
