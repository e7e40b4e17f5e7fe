"""md_export installs one top-level package: nothing of ours can collide with another `models`."""

import configparser
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# onnxruntime.quantization puts onnxruntime/transformers on sys.path, whose own `models` package
# shadowed ours when we installed a top-level `models`: `cannot import name 'Preset' from 'models'`.
SCRIPT = """
import onnxruntime.quantization  # first, as a user's script may
import sys
import torch
import md_export
from md_export.models import Preset, get_preset
from md_export.calibration.builders import CalibrationSettings, build_calibration
from md_export.quantize.driver import quantize_directory
from md_export.benchmarks.machine_peak import gemm_model
from md_export.cli import main

out = sys.argv[1]
md_export.export_model(torch.nn.Conv2d(3, 4, 3), {"x": torch.randn(1, 3, 8, 8)}, formats=["onnx"], out_dir=out + "/m")
assert isinstance(get_preset("mobilediffusion-tiny"), Preset)
from md_export.calibration.builders import load_prompts
from md_export.models.shipped_weights import WEIGHTS_ROOT
assert len(load_prompts()) >= 200 and WEIGHTS_ROOT.is_dir()  # package data, found by package, not by cwd
assert main(["parity", out + "/m"]) == 0
gemm_model("int8", 16)
ours = [name for name in ("models", "calibration", "benchmarks")
        if name in sys.modules and "md_export" in str(getattr(sys.modules[name], "__file__", ""))]
assert not ours, ours
print("ok")
"""


def test_public_entry_points_work_after_onnxruntime_quantization(tmp_path):
    # a fresh interpreter outside the repository: only the installed package is importable
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-2000:]


def test_every_installed_package_is_under_md_export():
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    packages = config["options"]["packages"].split()
    assert packages and all(p == "md_export" or p.startswith("md_export.") for p in packages)
    # every folder with Python files under the installed roots is listed (a missing one is not shipped)
    mapped = {"md_export": REPO / "md_export", "md_export.models": REPO / "models",
              "md_export.calibration": REPO / "calibration", "md_export.benchmarks": REPO / "benchmarks"}
    for package, root in mapped.items():
        for folder in [root, *(p for p in root.rglob("*") if p.is_dir() and p.name != "__pycache__")]:
            if any(folder.glob("*.py")):
                name = ".".join([package, *folder.relative_to(root).parts])
                assert name in packages, name
                assert (folder / "__init__.py").exists(), f"{folder} has modules but no __init__.py"
