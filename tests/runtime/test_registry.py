"""One registry mechanism for everything chosen by name (backends, detectors, eval protocols, bench modes) and one
way to import an optional dependency (``require``): the tables, the rules built on them and their messages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from bfm_deploy.backends import BACKEND_NAMES, BACKENDS, Backend, BackendEntry, create_backend
from bfm_deploy.backends.auto import choose
from bfm_deploy.backends.base import AutoTry
from bfm_deploy.errors import BfmError
from bfm_deploy.optional import install_hint, require
from bfm_deploy.registry import Registry

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "engines" / "demo"


# --- Registry and require ---------------------------------------------------------------------------------------

def test_registry_keeps_order_and_names_the_choices_of_an_unknown_name() -> None:
    table: Registry[int] = Registry("colour")
    table.register("red", 1)
    table.decorate("green")(2)
    assert table.names() == ("red", "green") and table.get("green") == 2 and "red" in table and len(table) == 2
    with pytest.raises(BfmError, match=r"^unknown colour 'blue'; choose one of red, green$"):
        table.get("blue")
    with pytest.raises(ValueError, match="registered twice"):
        table.register("red", 3)


def test_require_imports_or_names_the_extra_in_one_line() -> None:
    assert require("json", "serve").dumps([]) == "[]"
    with pytest.raises(BfmError) as caught:
        require("no_such_module_bfm", "gallery", "a PostgreSQL gallery")
    message = str(caught.value)
    assert message.startswith("a PostgreSQL gallery needs no_such_module_bfm (") and "\n" not in message
    assert message.endswith(install_hint("gallery")) and "pip install 'bfm[gallery]'" in message
    with pytest.raises(ValueError, match="unknown extra"):
        install_hint("nope")


# --- backends -------------------------------------------------------------------------------------------------------

def test_backend_names_come_from_the_registrations_in_choice_order() -> None:
    names = ("auto", "trt", "ort", "openvino", "openvino-f32", "openvino-bf16", "torch")
    assert BACKEND_NAMES == BACKENDS.names() == names
    assert {BACKENDS.get(n).extra for n in BACKEND_NAMES} == {None, "gpu", "openvino", "train"}  # what installs each
    with pytest.raises(BfmError, match=rf"^unknown backend 'tensorflow'; choose one of {', '.join(names)}$"):
        create_backend("tensorflow", DEMO)


class _Fake(Backend):
    def __init__(self, name: str, options: dict[str, Any]) -> None:
        self.name, self.options = name, options

    def infer(self, network: Any, batch: Any) -> Any:
        raise NotImplementedError


def _fakes(log: list[str], fail: set[str], cuda: dict[str, bool]) -> Registry[BackendEntry]:
    """trt, ort and torch as auto sees them; ``fail``: those whose creation fails, ``cuda``: their cheap checks."""

    def entry(name: str, auto: AutoTry) -> BackendEntry:
        def create(bundle: Any, **options: Any) -> Backend:
            log.append(f"create {name} {options}")
            if name in fail:
                raise BfmError(f"{name} is not here")
            return _Fake(name, options)

        return BackendEntry(create, needs="", auto=auto)

    def check(name: str) -> Any:
        return lambda: log.append(f"check {name}") or cuda[name]

    table: Registry[BackendEntry] = Registry("backend")
    table.register("trt", entry("trt", AutoTry()))
    table.register("ort", entry("ort", AutoTry({"device": "cuda"}, check("ort"))))
    table.register("torch", entry("torch", AutoTry({"device": "cuda"}, check("torch"))))
    return table


def test_auto_tries_the_gpu_backends_in_order_then_ort_on_the_cpu() -> None:
    log: list[str] = []
    chosen = choose(None, _fakes(log, {"trt"}, {"ort": False, "torch": True}), gpu_present=True)  # type: ignore[arg-type]
    assert (chosen.name, chosen.options) == ("torch", {"device": "cuda"})  # type: ignore[attr-defined]
    assert log == ["create trt {}", "check ort", "check torch", "create torch {'device': 'cuda'}"]

    log.clear()  # trt opens: no other backend is even checked (importing torch to ask costs seconds)
    assert choose(None, _fakes(log, set(), {"ort": True, "torch": True}), gpu_present=True).name == "trt"  # type: ignore[arg-type]
    assert log == ["create trt {}"]

    log.clear()  # every GPU try fails, or there is no GPU: ort on the CPU
    gpu_tries_fail = _fakes(log, {"trt", "torch"}, {"ort": False, "torch": True})
    assert choose(None, gpu_tries_fail, gpu_present=True).options == {"device": "cpu"}  # type: ignore[arg-type,attr-defined]
    assert log[-1] == "create ort {'device': 'cpu'}"
    log.clear()
    assert choose(None, _fakes(log, set(), {"ort": True, "torch": True}), gpu_present=False).options == {"device": "cpu"}  # type: ignore[arg-type,attr-defined]
    assert log == ["create ort {'device': 'cpu'}"]


def test_auto_takes_no_options() -> None:
    with pytest.raises(BfmError, match="backend 'auto' takes no options"):
        create_backend("auto", DEMO, device="cpu")


def test_a_backend_without_its_extra_says_which_one_in_one_line() -> None:
    code = ("import sys; sys.modules['torch'] = None\n"
            "from bfm_deploy.backends import create_backend\nfrom bfm_deploy.bundle import Bundle\n"
            "from bfm_deploy.errors import BfmError\n"
            f"try:\n    create_backend('torch', Bundle.load({str(DEMO)!r}))\n"
            "except BfmError as exc:\n    print(exc)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert out.startswith("the torch backend needs torch (") and install_hint("train") in out, out
    assert out.count("\n") == 1


# --- detectors ------------------------------------------------------------------------------------------------------

def test_detector_names_and_help_come_from_the_registrations() -> None:
    from bfm_deploy.detect import DETECTOR_HELP, DETECTOR_NAMES, DETECTORS, MtcnnDetector, YunetDetector, open_detector

    assert DETECTOR_NAMES == DETECTORS.names() == ("auto", "bundle", "scrfd", "yunet", "mtcnn")
    assert DETECTOR_HELP == ("Face detector: auto (the bundle's detector.onnx, else mtcnn), bundle, scrfd, yunet, "
                             "mtcnn, or PATH to an SCRFD or YuNet .onnx.")
    assert isinstance(open_detector("mtcnn"), MtcnnDetector) and isinstance(open_detector("yunet"), YunetDetector)
    with pytest.raises(BfmError, match="choose one of auto, bundle, scrfd, yunet, mtcnn or a path to an .onnx file"):
        open_detector("retina")


# --- eval protocols -------------------------------------------------------------------------------------------------

def test_eval_datasets_come_from_the_registered_protocols() -> None:
    from bfm_deploy.eval.api import PROTOCOLS, EvalOptions, run_eval
    from bfm_deploy.eval.cli import main

    assert PROTOCOLS.names() == ("lfw", "masked-lfw", "mfr2", "pairs", "landmarks", "lfw-identification")
    assert {PROTOCOLS.get(n).kind for n in PROTOCOLS} == {"verification", "landmarks", "identification"}
    help_text = CliRunner().invoke(main, ["--help"], terminal_width=100).output
    assert "--dataset lfw|masked-lfw|mfr2|pairs|landmarks|lfw-identification" in help_text
    datasets = help_text.split("Data sets")[1].split("Methods:")[0]
    assert all(f"\n    {name} " in datasets or f"\n    {name}\n" in datasets for name in PROTOCOLS), datasets
    with pytest.raises(BfmError, match="use run_landmarks"):
        run_eval(EvalOptions(dataset="landmarks"))
    with pytest.raises(BfmError, match="use run_identification"):  # it used to run the generic pairs protocol
        run_eval(EvalOptions(dataset="lfw-identification"))


# --- bench modes ----------------------------------------------------------------------------------------------------

def test_bench_has_one_flag_per_registered_mode_and_runs_the_chosen_one(monkeypatch: pytest.MonkeyPatch) -> None:
    from bfm_deploy.bench import cli

    assert cli.MODES.names() == ("flops", "latency", "serve", "gallery-scale")
    flags = [p.opts[0] for p in cli.main.params if isinstance(p, click.Option) and p.name.startswith("mode_")]
    assert flags == ["--flops", "--latency", "--serve", "--gallery-scale"]
    ran: list[tuple[str, bool]] = []
    real_get = cli.MODES.get  # entries are frozen: the lookup hands out a recording one instead
    monkeypatch.setattr(cli.MODES, "get", lambda name: cli.BenchMode(
        real_get(name).help, lambda request: ran.append((name, request.quick))))
    result = CliRunner().invoke(cli.main, ["--serve", "--quick"])
    assert result.exit_code == 0, result.output
    assert ran == [("serve", True)]
