"""LiteRT export: litert-torch converts, ai-edge-quantizer casts weights to fp16.

Multi-resolution: one `.tflite` file with one signature per resolution (`unet_512`, `unet_768`);
litert-torch shares the weights between signatures. Token ids: LiteRT has no int64 kernels on
phones, the converter makes `input_ids` int32 and the runner casts.

Convolutions whose fp32 kernel is over 32 MiB are emitted as output-channel groups (see
`split_large_convs`) so that AI Edge Quantizer can quantize them; the VAE attention's q k^T is
lowered as a BATCH_MATMUL that XNNPACK runs (`attention_scores_as_batch_matmul`).
"""

from __future__ import annotations

import contextlib
import inspect
import types
from pathlib import Path
from typing import Callable, Iterable, Iterator

import torch
from torch import nn

from .method_swap import method_swapped
from .quiet import quiet
from .split_projections import gated_projections_split
from .types import ExportError, ExportTarget, Tolerance, ToleranceTable

TOLERANCES = ToleranceTable({
    ("*", "fp32"): Tolerance(min_psnr_db=60.0, min_cosine=0.99999, max_abs_rel=1e-3),
    # fp16 weights, fp32 compute (the interpreter dequantizes): only weight rounding error
    ("*", "fp16"): Tolerance(min_psnr_db=40.0, min_cosine=0.9999),
})


def fp16_recipe():
    from ai_edge_quantizer import qtyping, recipe_manager

    manager = recipe_manager.RecipeManager()
    manager.add_quantization_config(
        regex=".*",
        operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
        op_config=qtyping.OpQuantizationConfig(
            weight_tensor_config=qtyping.TensorQuantizationConfig(num_bits=16, dtype=qtyping.TensorDataType.FLOAT),
            compute_precision=qtyping.ComputePrecision.FLOAT,
            explicit_dequantize=True,
        ),
        algorithm_key="float_casting",
    )
    return manager.get_quantization_recipe()


def _names_match_forward(target: ExportTarget) -> bool:
    parameters = list(inspect.signature(target.module.forward).parameters)
    return parameters[: len(target.sample_inputs)] == list(target.sample_inputs)


def _by_index(names: list[str]) -> list[str]:
    """args_10 after args_9: the converter numbers positional tensors, the listing sorts them as text."""
    return sorted(names, key=lambda n: (len(n), n))


def runtime_names(path: Path, signature: str, target: ExportTarget) -> dict[str, str]:
    """Our tensor name -> the signature's. Inputs keep our names when they were passed by keyword;
    positional inputs are args_0.. and outputs output_0.., in forward()'s order."""
    from ai_edge_litert.interpreter import Interpreter

    listing = Interpreter(model_path=str(path)).get_signature_list()[signature]
    inputs, outputs = list(listing["inputs"]), _by_index(list(listing["outputs"]))
    if set(inputs) == set(target.sample_inputs):
        names = {name: name for name in target.sample_inputs}
    else:
        names = dict(zip(target.sample_inputs, _by_index(inputs)))
    return names | dict(zip(target.output_names, outputs))


# AI Edge Quantizer 0.10 quantizes a constant over 32 MiB in chunks: it flattens the tensor to 2-D
# but broadcasts the scales, kept at the tensor's rank, onto it, which numpy refuses ("input operand
# has more dimensions than allowed by the axis remapping") for every conv kernel that large, so every
# int8/int4 recipe fails on it (google-ai-edge/ai-edge-quantizer#472: an SD-1.5 UNet, nightly AEQ).
# Ours: `mobilediffusion`'s 1024-wide upsampler conv (36 MiB), 15 convs of the ablation presets, 27
# of `sd15`. Fully-connected weights are 2-D already and quantize fine.
AEQ_CHUNKED_BYTES = 32 * 1024 * 1024
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _grouped_conv_forward(group: int):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        biases = [None] * -(-self.out_channels // group) if self.bias is None else self.bias.split(group)
        return torch.cat([self._conv_forward(x, w, b) for w, b in zip(self.weight.split(group), biases)], dim=1)

    return forward


@contextlib.contextmanager
def split_large_convs(modules: Iterable[nn.Module], limit: int = AEQ_CHUNKED_BYTES) -> Iterator[list[str]]:
    """While converting, run each conv whose fp32 kernel is over `limit` bytes as convs over output
    channel groups of at most `limit` bytes each, concatenated: the converter folds the weight
    slices into one constant per group, each under the quantizer's chunking threshold.

    Same numbers: an output channel is its own dot product whichever group it is in (PyTorch: equal
    up to the kernels' summation order; bit-identical for the 1024-wide upsampler on x86), and
    channelwise quantization (a scale per output channel) gives the same int8 kernel split or not.
    Costs one CONCATENATION per split conv. The modules are restored on exit (their parameters and
    state dicts are never touched). Yields the split convs' names."""
    patched: dict[int, nn.Module] = {}
    names = []
    for module in modules:
        for name, conv in module.named_modules():
            # exact types: a subclass may have its own forward; grouped convs are small (depthwise)
            if type(conv) not in _CONVS or conv.groups != 1 or id(conv) in patched:
                continue
            per_channel = conv.weight[0].numel() * 4  # bytes of one output channel in the fp32 file
            if per_channel * conv.out_channels <= limit or per_channel > limit:  # fine / no split helps
                continue
            count = -(-conv.out_channels // (limit // per_channel))  # fewest groups, then even sizes
            conv.forward = types.MethodType(_grouped_conv_forward(-(-conv.out_channels // count)), conv)
            patched[id(conv)] = conv
            names.append(name)
    try:
        yield names
    finally:
        for conv in patched.values():
            del conv.forward  # back to the class's forward


def _einsum_scores(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    return torch.einsum("bic,bjc->bij", q, k)


def attention_scores_as_batch_matmul(modules: Iterable[nn.Module]) -> contextlib.AbstractContextManager[int]:
    """While converting, compute the VAE attention's q k^T as an einsum. As a matmul with a
    transposed k (3-D, batch 1) the converter emits a FULLY_CONNECTED whose weights are k;
    XNNPACK takes only constant weights, so TFLite's builtin kernel ran it: 297-327 ms of the 512
    decoder's 3.9-4.2 s (md-export bench profile). As an einsum it is a BATCH_MATMUL that XNNPACK
    runs: the decoder 3,924 -> 3,608 ms (3 runs each, 2-core AVX2 EPYC). LiteRT only: in ONNX it
    would be an Einsum node that onnx-static-int8 (which quantizes MatMul) leaves float. Restored
    on exit; yields how many attentions were switched."""
    from md_export.models.vae_kl import VAEAttention

    return method_swapped(modules, lambda m: isinstance(m, VAEAttention), "scores", _einsum_scores)


def _group_norm_by_channel_moments(self, x: torch.Tensor) -> torch.Tensor:
    """nn.GroupNorm's output, with every full-size op elementwise or a mean over H and W."""
    batch, channels = x.shape[:2]
    groups, size = self.num_groups, channels // self.num_groups
    # full size, channels-last: each channel's E[x] and E[x^2], side by side along W: (N, C, 1, 2)
    moments = torch.cat([x.mean(dim=(2, 3), keepdim=True), (x * x).mean(dim=(2, 3), keepdim=True)], dim=3)
    # 2C values from here: each group's mean and variance, then each channel's scale and shift
    grouped = _mean_over_unit_height(moments).reshape(batch, groups, size, 2).mean(dim=2)  # (N, G, 2)
    mean, square = grouped[..., 0:1], grouped[..., 1:2]  # (N, G, 1)
    inverse = torch.rsqrt(square - mean * mean + self.eps)
    scale = inverse.expand(batch, groups, size).reshape(batch, channels)
    shift = (-mean * inverse).expand(batch, groups, size).reshape(batch, channels)
    if self.affine:
        scale, shift = scale * self.weight, shift * self.weight + self.bias
    affine = _mean_over_unit_height(torch.stack([scale, shift], dim=-1).reshape(batch, channels, 1, 2))
    # full size again
    return x * affine[..., 0:1] + affine[..., 1:2]


def _mean_over_unit_height(t: torch.Tensor) -> torch.Tensor:
    # The same values (H is 1). litert-torch's layout partitioner prices a layout change after a
    # mean at 9 and any other at 10; GroupNorm left whole costs two changes (20), on full-size
    # tensors. These two means make the moments' round trip cost 18, so the partitioner takes it,
    # on 2C values.
    return t.mean(dim=2, keepdim=True)


def group_norms_channels_last(modules: Iterable[nn.Module]) -> contextlib.AbstractContextManager[int]:
    """While converting, compute each GroupNorm from per-channel moments E[x], E[x^2] (to fp32
    rounding: the 512 decoder's LiteRT parity 126.3 -> 102.8 dB PSNR against torch). TFLite's convs
    are NHWC; nn.GroupNorm's (N, G, C/G, H, W) reshape is not, so the converter put a full-size
    transpose on each side of every norm: 50 transposes, 250 ms of the 512 decoder's 1,035 ms as
    dynamic int8, 234-271 ms of 2.84 s in fp32 (bench profile, 2-core Xeon). Restored on exit;
    yields how many norms were switched."""
    return method_swapped(modules, lambda m: type(m) is nn.GroupNorm, "forward", _group_norm_by_channel_moments)


def convert(targets: list[ExportTarget], path: Path, before_write: Callable[[], None] | None = None
            ) -> dict[str, str]:
    """Convert one network at one or more shapes into one fp32 file. Returns target tag -> signature.
    `before_write` runs once the network is converted and before the flatbuffer is written: the
    torch module is no longer needed then (the caller may free its weights)."""
    import litert_torch

    try:
        modules = [target.module for target in targets]
        with quiet(), split_large_convs(modules), attention_scores_as_batch_matmul(modules), \
                group_norms_channels_last(modules), gated_projections_split(modules):
            converter = None
            for target in targets:
                add = litert_torch.signature if converter is None else converter.signature
                if _names_match_forward(target):  # signature inputs then carry the manifest's names
                    converter = add(target.tag, target.module, sample_kwargs=dict(target.sample_inputs))
                else:
                    converter = add(target.tag, target.module, sample_args=target.args())
            # Constants handled lazily: the 512 UNet converted in 72 s at 4.6 GB max RSS against
            # 115 s and 8.4 GB (2-core Xeon, the torch module held throughout), the same 2,782
            # operators and bit-identical outputs.
            converted = converter.convert(lightweight_conversion=True)
            if before_write is not None:
                before_write()
            converted.export(str(path))
    except Exception as exc:
        raise ExportError(f"tflite export of {targets[0].component} failed: {str(exc).splitlines()[0]}") from exc
    return {target.tag: target.tag for target in targets}


def to_fp16(fp32_path: Path, path: Path) -> Path:
    """fp16 weights, dequantized to fp32 at load (TFLite's float16 quantization)."""
    from ai_edge_quantizer import quantizer

    try:
        with quiet():
            result = quantizer.Quantizer(str(fp32_path), fp16_recipe()).quantize()
            result.export_model(str(path), overwrite=True)
    except Exception as exc:
        raise ExportError(f"tflite fp16 conversion of {fp32_path.name} failed: {str(exc).splitlines()[0]}") from exc
    return path
