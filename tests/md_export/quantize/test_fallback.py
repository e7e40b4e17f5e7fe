"""The float fallback reaches a target that plain static int8 misses (constructed case)."""

import numpy as np
import torch
from torch import nn

from md_export import export_model
from md_export.quantize.sensitivity import block_of, static_with_fallback


class OutlierChannel(nn.Module):
    """One activation channel 300x larger than the rest: per-tensor int8 activations crush the
    other channels, the textbook reason int8 diffusion models come out noisy."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(4, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 32, 3, padding=1)
        self.conv3 = nn.Conv2d(32, 4, 3, padding=1)
        scale = torch.ones(1, 32, 1, 1)
        scale[:, 0] = 300.0
        self.register_buffer("scale", scale)

    def forward(self, x):
        h = torch.relu(self.conv1(x)) * self.scale
        return self.conv3(torch.relu(self.conv2(h)))


def test_fallback_reaches_a_target_plain_int8_misses(tmp_path):
    torch.manual_seed(0)
    export_model(OutlierChannel(), {"x": torch.randn(1, 4, 16, 16)}, formats=["onnx"], out_dir=tmp_path)
    rng = np.random.default_rng(0)
    feeds = [{"x": rng.standard_normal((1, 4, 16, 16)).astype(np.float32)} for _ in range(8)]
    # uint8 activations: plain 42.9 dB, conv2 float 46.8, conv2 + conv1 float 51.2 (measured)
    target = 48.0
    result = static_with_fallback(tmp_path / "model.fp32.onnx", tmp_path / "q.onnx", feeds, feeds, target)
    assert result.plain_psnr_db < target  # plain static int8 misses
    assert result.reached and result.final_psnr_db >= target
    assert 0 < len(result.float_blocks) < len(result.sensitivity)  # some, not all, blocks stay float
    assert [row["module"] for row in result.sensitivity][:1] == [result.float_blocks[0]]  # most sensitive first
    assert {row["module"] for row in result.sensitivity} >= {"conv1", "conv2", "conv3"}  # PyTorch names
    assert (tmp_path / "q.onnx").exists()


def test_blocks_are_pytorch_module_paths():
    assert block_of("/down_blocks.1/attentions.0/transformer_blocks.0/attn2/to_out.0/MatMul") == "down_blocks.1.attentions.0"
    assert block_of("/mid_attention/transformer_blocks.7/ff/proj/MatMul") == "mid_attention.transformer_blocks.7"
    assert block_of("/encoder/layers.3/mlp/fc1/MatMul") == "encoder.layers.3"
    assert block_of("/conv_in/Conv") == "conv_in"
