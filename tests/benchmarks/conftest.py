"""Shared fixtures: a tiny exported artifact directory (built once per session) and a CLI driver
that behaves like md-export (bench subcommands, MdExportError -> exit 2 with one line)."""

import argparse
import sys
from pathlib import Path

import pytest

from md_export.errors import MdExportError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "benchmarks"


def run_cli(argv: list[str]) -> int:
    from md_export.benchmarks.cli import register

    parser = argparse.ArgumentParser(prog="md-export")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except MdExportError as exc:
        print(f"md-export: error: {exc}", file=sys.stderr)
        return 2


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture(scope="session")
def onnx_dir(tmp_path_factory):
    """text_encoder, unet, vae_decoder of mobilediffusion-tiny as ONNX fp32, with reference inputs."""
    from md_export.export import export_preset
    from md_export.models import get_preset

    out = tmp_path_factory.mktemp("bench_onnx")
    export_preset(get_preset("mobilediffusion-tiny"), ["text_encoder", "unet", "vae_decoder"], ["onnx"], ["fp32"], out)
    return out


@pytest.fixture(scope="session")
def tflite_dir(tmp_path_factory):
    from md_export.export import export_preset
    from md_export.models import get_preset

    out = tmp_path_factory.mktemp("bench_tflite")
    export_preset(get_preset("mobilediffusion-tiny"), ["vae_decoder"], ["tflite"], ["fp32"], out)
    return out
