"""`mobilediffusion`'s 1024-wide upsampler conv (a 36 MiB kernel) through LiteRT dynamic int8.

AI Edge Quantizer chunks constants over 32 MiB and fails on conv kernels that large ("input operand
has more dimensions than allowed by the axis remapping", google-ai-edge/ai-edge-quantizer#472);
the LiteRT export splits such convs into output-channel groups (tflite.split_large_convs).
"""

import numpy as np
import torch
from torch import nn

from md_export import export_model
from md_export.cli import main
from md_export.export.tflite import AEQ_CHUNKED_BYTES, split_large_convs
from md_export.parity import check_directory
from md_export.models.conv_blocks import Upsample


def test_split_convs_compute_the_same_and_are_restored():
    torch.manual_seed(0)
    module = nn.Sequential(nn.Conv2d(8, 6, 3, padding=1), nn.Conv2d(6, 5, 3, padding=1, bias=False),
                           nn.Conv2d(5, 5, 3, padding=1, groups=5))
    x = torch.randn(1, 8, 7, 7)
    with torch.inference_mode():
        before = module(x)
        # 600 bytes: 2 output channels per group (288 and 216 bytes each): 6 -> 2+2+2, 5 -> 2+2+1;
        # the depthwise conv is left alone
        with split_large_convs([module], limit=600) as names:
            assert names == ["0", "1"]
            split = module(x)
    torch.testing.assert_close(split, before, rtol=0, atol=1e-6)  # summation order may differ
    assert all("forward" not in conv.__dict__ for conv in module)  # class forward again


def test_full_size_upsampler_quantizes_to_dynamic_int8_and_passes_parity(tmp_path, capsys):
    torch.manual_seed(0)
    block = Upsample(1024)  # up_blocks.0's resampler: 1024 channels at 16x16 latents
    assert block.conv.weight.numel() * 4 > AEQ_CHUNKED_BYTES
    with torch.inference_mode(), split_large_convs([block]) as names:
        assert names == ["conv"]
        x = torch.randn(1, 1024, 4, 4)
        split = block(x)
    with torch.inference_mode():
        torch.testing.assert_close(split, block(x), rtol=0, atol=1e-6)

    fp32 = tmp_path / "fp32"
    export_model(block, {"x": torch.randn(1, 1024, 16, 16)}, formats=["tflite"], out_dir=fp32,
                 precisions=["fp32"], name="upsample")
    quantized = tmp_path / "dyn"
    args = ["quantize", "--artifacts", str(fp32), "--recipe", "tflite-dynamic-int8", "--out", str(quantized)]
    assert main(args) == 0, capsys.readouterr().err

    from ai_edge_litert.interpreter import Interpreter

    (model,) = quantized.glob("*.tflite")
    interpreter = Interpreter(model_path=str(model))
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    kernels = [tensors[op["inputs"][1]] for op in interpreter._get_ops_details() if op["op_name"] == "CONV_2D"]
    assert len(kernels) == 2  # two 512-channel groups, each under the quantizer's chunking threshold
    assert all(k["dtype"] == np.int8 for k in kernels)  # quantized, not left in fp32
    assert sum(k["shape"][0] for k in kernels) == 1024

    report = check_directory(quantized)
    assert report.passed, [(a.file, a.violations) for a in report.artifacts]
    assert [a.status for a in report.artifacts] == ["passed"]

