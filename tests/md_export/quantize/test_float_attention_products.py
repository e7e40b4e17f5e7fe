"""onnx-static-int8 keeps attention's activation x activation products float (quantize/onnx_recipes.py)
and quantizes the projections around them."""

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from md_export import export_model
from md_export.export.manifest import read_manifest
from md_export.quantize import onnx_recipes
from md_export.quantize.kernels import onnx_kernel_report


class Attention(nn.Module):
    def __init__(self, dim: int = 64, heads: int = 2):
        super().__init__()
        self.heads = heads
        self.to_q, self.to_k, self.to_v = (nn.Linear(dim, dim, bias=False) for _ in range(3))
        self.to_out = nn.Linear(dim, dim)

    def forward(self, tokens):
        batch, length, dim = tokens.shape

        def split(t):
            return t.reshape(batch, length, self.heads, dim // self.heads).transpose(1, 2)

        q, k, v = split(self.to_q(tokens)), split(self.to_k(tokens)), split(self.to_v(tokens))
        weights = torch.relu(q @ k.transpose(-1, -2)) / length
        return self.to_out((weights @ v).transpose(1, 2).reshape(batch, length, dim))


def _optimized_ops(path, tmp_path) -> list[str]:
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return [node.op_type for node in onnx.load(str(tmp_path / "optimized.onnx")).graph.node]


def test_static_int8_quantizes_projections_and_keeps_the_two_products_float(tmp_path):
    torch.manual_seed(0)
    module = Attention().eval()
    export_model(module, {"tokens": torch.randn(1, 16, 64)}, formats=["onnx"], out_dir=tmp_path / "fp",
                 precisions=["fp32"])
    fp32 = tmp_path / "fp" / read_manifest(tmp_path / "fp")["artifacts"][0]["file"]
    products = onnx_recipes.activation_product_nodes(onnx.load(str(fp32)).graph)
    assert len(products) == 2, products  # q k^T and weights v; the four projections read weights

    rng = np.random.default_rng(0)
    feeds = [{"tokens": rng.normal(size=(1, 16, 64)).astype(np.float32)} for _ in range(8)]
    out = onnx_recipes.static_int8(fp32, tmp_path / "int8.onnx", feeds)
    ops = _optimized_ops(out, tmp_path)
    # the projections: q, k, v without bias (MatMulIntegerToFloat), to_out with bias (QGemm or
    # MatMulIntegerToFloat with its bias); the products: float MatMul / FusedMatMul
    integer = [op for op in ops if op in ("MatMulIntegerToFloat", "QGemm", "QLinearMatMul", "MatMulInteger")]
    assert len(integer) == 4 and "QLinearMatMul" not in integer, ops
    assert sum(op in ("MatMul", "FusedMatMul") for op in ops) == 2, ops

    report = onnx_kernel_report(out)  # what `md-export quantize` prints and the manifest records
    assert report.quantized["MatMul"] + report.quantized.get("Gemm", 0) == 4
    assert report.float_activation_products == 2 and "2 float products of two activations" in report.summary()
    assert onnx_kernel_report(fp32).float_activation_products == 2

    tokens = rng.normal(size=(1, 16, 64)).astype(np.float32)
    with torch.no_grad():
        expected = module(torch.from_numpy(tokens)).numpy()
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"tokens": tokens})[0]
    psnr = 20 * np.log10(np.abs(expected).max() / np.sqrt(np.mean((got - expected) ** 2)))
    # int8 projections, float products, a held-out input: measured 45.6 dB
    assert psnr >= 30.0, psnr
