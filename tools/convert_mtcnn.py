"""Rebuild MTCNN's P-Net, R-Net and O-Net in torch from facenet-pytorch's state dicts and export them to ONNX.

The weights are the original MTCNN (Zhang et al. 2016) Caffe weights as converted and shipped, MIT licensed,
inside the facenet-pytorch 2.6.0 wheel. Only the wheel is needed (it pins an old torch, so do not install it):

    pip download --no-deps facenet-pytorch==2.6.0 -d /tmp/fp
    python tools/convert_mtcnn.py /tmp/fp/facenet_pytorch-2.6.0-py3-none-any.whl

writes bfm_deploy/assets/mtcnn/{pnet,rnet,onet}.onnx, LICENSE and README.md, after checking each ONNX model
against the torch model on random inputs.

Layout the weights expect (learned from facenet-pytorch's detect_face): input float32 NCHW, RGB,
(x - 127.5) * 0.0078125, ordinary (H, W) order. The converted Caffe weights keep one trace of Caffe's
transposed images: R-Net and O-Net flatten their last feature map in (W, H, C) order before the dense layers,
so the models below permute to (N, W, H, C) before flattening.
"""

from __future__ import annotations

import hashlib
import io
import warnings
import zipfile
from pathlib import Path

import click
import numpy as np
import onnxruntime as ort
import torch
from torch import nn
from tqdm import tqdm

from bfm_deploy.atomic import atomic_write_bytes, atomic_write_text
from bfm_deploy.cli_support import one_line_errors
from bfm_deploy.errors import BfmError

OPSET = 17
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "bfm_deploy" / "assets" / "mtcnn"
WHEEL_DATA = "facenet_pytorch/data/{name}.pt"
WHEEL_LICENSE = "facenet_pytorch-2.6.0.dist-info/LICENSE.md"


def _conv_prelu(cin: int, cout: int, kernel: int) -> tuple[nn.Conv2d, nn.PReLU]:
    return nn.Conv2d(cin, cout, kernel), nn.PReLU(cout)


def _flatten_whc(x: torch.Tensor) -> torch.Tensor:
    """Flatten (N, C, H, W) in the (W, H, C) order the converted Caffe dense weights were trained with."""
    return x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)


class PNet(nn.Module):
    """Proposal net: fully convolutional, 12x12 receptive field, stride 2. Outputs (bbox regression, face prob)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = _conv_prelu(3, 10, 3)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2, self.prelu2 = _conv_prelu(10, 16, 3)
        self.conv3, self.prelu3 = _conv_prelu(16, 32, 3)
        self.conv4_1 = nn.Conv2d(32, 2, 1)
        self.conv4_2 = nn.Conv2d(32, 4, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.prelu2(self.conv2(x))
        x = self.prelu3(self.conv3(x))
        return self.conv4_2(x), torch.softmax(self.conv4_1(x), dim=1)


class RNet(nn.Module):
    """Refine net on 24x24 crops. Outputs (bbox regression, face prob)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = _conv_prelu(3, 28, 3)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = _conv_prelu(28, 48, 3)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = _conv_prelu(48, 64, 2)
        self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu3(self.conv3(x))
        x = self.prelu4(self.dense4(_flatten_whc(x)))
        return self.dense5_2(x), torch.softmax(self.dense5_1(x), dim=1)


class ONet(nn.Module):
    """Output net on 48x48 crops. Outputs (bbox regression, landmarks [x1..x5, y1..y5] in box units, face prob)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = _conv_prelu(3, 32, 3)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = _conv_prelu(32, 64, 3)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = _conv_prelu(64, 64, 3)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4, self.prelu4 = _conv_prelu(64, 128, 2)
        self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x))
        x = self.prelu5(self.dense5(_flatten_whc(x)))
        return self.dense6_2(x), self.dense6_3(x), torch.softmax(self.dense6_1(x), dim=1)


# name -> (module class, output names, example input H/W, dynamic spatial axes?)
NETS: dict[str, tuple[type[nn.Module], list[str], int, bool]] = {
    "pnet": (PNet, ["reg", "prob"], 12, True),
    "rnet": (RNet, ["reg", "prob"], 24, False),
    "onet": (ONet, ["reg", "landmarks", "prob"], 48, False),
}

LICENSE_HEADER = """\
The MTCNN weights in this folder (pnet.onnx, rnet.onnx, onet.onnx) are the original MTCNN weights of
Kaipeng Zhang, Zhanpeng Zhang, Zhifeng Li and Yu Qiao, "Joint Face Detection and Alignment using Multi-task
Cascaded Convolutional Networks" (IEEE SPL 2016; https://github.com/kpzhang93/MTCNN_face_detection_alignment),
as converted to PyTorch and distributed in facenet-pytorch 2.6.0 (facenet_pytorch/data/*.pt), and converted
to ONNX by tools/convert_mtcnn.py. Both are MIT licensed; their notices follow.

== MTCNN (https://github.com/kpzhang93/MTCNN_face_detection_alignment) ==

"""
MTCNN_COPYRIGHT = "Copyright (c) 2016 Kaipeng Zhang"


def _licence_text(facenet_licence: str) -> str:
    """Both MIT notices: the original MTCNN's differs from facenet-pytorch's only in its copyright line."""
    lines = facenet_licence.strip().splitlines()
    copyright_lines = [i for i, line in enumerate(lines) if line.startswith("Copyright (c)")]
    if not lines or lines[0].strip() != "MIT License" or len(copyright_lines) != 1:
        raise BfmError("facenet-pytorch's LICENSE.md is not the expected MIT licence")
    mtcnn = lines.copy()
    mtcnn[copyright_lines[0]] = MTCNN_COPYRIGHT
    return (
        LICENSE_HEADER
        + "\n".join(mtcnn)
        + "\n\n== facenet-pytorch 2.6.0 (https://github.com/timesler/facenet-pytorch) ==\n\n"
        + "\n".join(lines)
        + "\n"
    )


README_TEXT = """\
# MTCNN weights (ONNX)

P-Net (dynamic height/width), R-Net (24x24) and O-Net (48x48), opset {opset}; input `input` float32 NCHW RGB,
`(x - 127.5) * 0.0078125`. Provenance: the original MTCNN weights (Zhang et al. 2016, MIT) as shipped in the
facenet-pytorch 2.6.0 wheel (`facenet_pytorch/data/{{pnet,rnet,onet}}.pt`, MIT, see LICENSE), rebuilt in torch and
exported by `tools/convert_mtcnn.py`. Regenerate with:

    pip download --no-deps facenet-pytorch==2.6.0 -d /tmp/fp
    python tools/convert_mtcnn.py /tmp/fp/facenet_pytorch-2.6.0-py3-none-any.whl

sha256 of the source state dicts:
{hashes}
"""


def _read_member(wheel: zipfile.ZipFile, member: str) -> bytes:
    try:
        return wheel.read(member)
    except KeyError:
        raise BfmError(f"{member} not found in the wheel; is it facenet-pytorch 2.6.0?") from None


def _load_state_dict(raw: bytes, member: str) -> dict[str, torch.Tensor]:
    state = torch.load(io.BytesIO(raw), weights_only=True, map_location="cpu")
    if not isinstance(state, dict):
        raise BfmError(f"{member} is not a state dict")
    return state


def _export(model: nn.Module, name: str, outputs: list[str], size: int, dynamic_hw: bool) -> bytes:
    example = torch.randn(2, 3, size, size)
    axes: dict[int, str] = {0: "batch"}
    if dynamic_hw:
        axes.update({2: "height", 3: "width"})
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # torch warns that the TorchScript exporter is legacy; it is the one that suits these tiny static nets.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            (example,),
            buffer,  # type: ignore[arg-type]  # torch annotates a path, but documents and accepts a file object
            input_names=["input"],
            output_names=outputs,
            dynamic_axes={"input": axes},
            opset_version=OPSET,
            dynamo=False,  # the TorchScript exporter writes one self-contained file for these small nets
        )
    return buffer.getvalue()


def _check(model: nn.Module, onnx_bytes: bytes, name: str, size: int, dynamic_hw: bool) -> float:
    """Largest absolute difference between torch and ONNX Runtime outputs on random inputs."""
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    shapes = [(3, size, size)] + ([(1, 37, 53), (2, 150, 120)] if dynamic_hw else [(5, size, size)])
    worst = 0.0
    generator = torch.Generator().manual_seed(0)
    for shape in shapes:
        batch, h, w = shape
        x = torch.rand(batch, 3, h, w, generator=generator) * 2 - 1
        with torch.no_grad():
            expected = model(x)
        got = session.run(None, {"input": x.numpy()})
        for e, g in zip(expected, got):
            if e.shape != g.shape:
                raise BfmError(f"{name}: ONNX output shape {g.shape} != torch {tuple(e.shape)}")
            worst = max(worst, float(np.abs(e.numpy() - g).max()))
    if worst > 1e-4:
        raise BfmError(f"{name}: ONNX differs from torch by {worst:.2e}")
    return worst


@click.command()
@click.argument("wheel_path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_OUT,
              show_default=True, help="folder for pnet/rnet/onet.onnx, LICENSE and README.md")
@one_line_errors
def main(wheel_path: Path, out_dir: Path) -> None:
    """Convert facenet-pytorch's MTCNN weights (from its wheel) to ONNX."""
    try:
        wheel = zipfile.ZipFile(wheel_path)
    except zipfile.BadZipFile:
        raise BfmError(f"{wheel_path} is not a wheel (zip) file") from None
    hashes = []
    with wheel:
        for name in tqdm(NETS, desc="mtcnn", unit="net"):
            cls, outputs, size, dynamic_hw = NETS[name]
            model = cls().eval()
            member = WHEEL_DATA.format(name=name)
            raw = _read_member(wheel, member)
            hashes.append(f"    {name}.pt {hashlib.sha256(raw).hexdigest()}")
            model.load_state_dict(_load_state_dict(raw, member), strict=True)  # strict: every key and shape must match our rebuild
            onnx_bytes = _export(model, name, outputs, size, dynamic_hw)
            diff = _check(model, onnx_bytes, name, size, dynamic_hw)
            atomic_write_bytes(out_dir / f"{name}.onnx", onnx_bytes)
            tqdm.write(f"{name}.onnx: {len(onnx_bytes)} bytes, max |onnx - torch| = {diff:.1e}")
        licence = _read_member(wheel, WHEEL_LICENSE).decode("utf-8")
    atomic_write_text(out_dir / "LICENSE", _licence_text(licence))
    atomic_write_text(out_dir / "README.md", README_TEXT.format(opset=OPSET, hashes="\n".join(hashes)))


if __name__ == "__main__":
    main()
