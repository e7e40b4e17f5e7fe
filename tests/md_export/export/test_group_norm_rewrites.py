"""Both backends' export-time GroupNorm rewrites give nn.GroupNorm's output and undo themselves:
LiteRT's per-channel moments (export/tflite.py) and ONNX's layer norm over groups
(export/onnx_group_norm.py)."""

import pytest
import torch
from torch import nn

from md_export.export.onnx_group_norm import group_norms_as_layer_norm
from md_export.export.tflite import group_norms_channels_last

# Outputs of magnitude 4-12. Moments: E[x^2] - E[x]^2 in fp32, measured at most 1.9e-6 with
# zero-mean channels, 1.1e-4 to 2.1e-4 with every channel's mean at 50 (cancellation; variance 9).
# Layer norm over groups: the same statistics in another kernel, measured at most 1.4e-6 and 3.8e-6.
REWRITES = {
    "tflite moments": (group_norms_channels_last, {0.0: 2e-5, 50.0: 1e-3}),
    "onnx layer norm": (group_norms_as_layer_norm, {0.0: 2e-5, 50.0: 2e-5}),
}


@pytest.mark.parametrize("rewrite", list(REWRITES))
@pytest.mark.parametrize("groups,channels,affine", [(32, 512, True), (8, 64, False), (1, 16, True)])
@pytest.mark.parametrize("offset", [0.0, 50.0])
def test_rewrite_gives_group_norms_output_and_is_undone(rewrite, groups, channels, affine, offset):
    swapped, bounds = REWRITES[rewrite]
    torch.manual_seed(0)
    norm = nn.GroupNorm(groups, channels, eps=1e-6, affine=affine)
    if affine:
        nn.init.normal_(norm.weight)
        nn.init.normal_(norm.bias)
    x = torch.randn(2, channels, 16, 16) * 3 + offset
    expected = norm(x)
    with swapped([norm]) as switched:
        got = norm(x)
    assert switched == 1
    assert "forward" not in vars(norm)  # restored: the class's forward again
    assert (got - expected).abs().max() <= bounds[offset], (got - expected).abs().max()
