"""Which of onnxruntime's int8 conv kernels a static int8 model's convs reach, chosen on this host.

onnxruntime (MLAS) runs a QLinearConv whose int8 weights have zero point 0 on its symmetric conv
kernels (an indirect-buffer conv, AVX2 / AVX-512 VNNI); any other weight zero point sends it
through im2col and the int8 GEMM, which on an AMX host runs on AMX tiles. On the 2-core Xeon
(AMX, AVX-512 VNNI; its int8 GEMM probe 4,161 GOP/s, its int8 conv probe 1,126) the same
640-channel 3x3 conv at 64x64 ran 1,206 GOP/s on the symmetric kernel and 2,081 through the GEMM
(1.59-1.78x in three later runs). A weight zero point of -1 with every stored code one lower
dequantizes to the same values (code - zero point), and the integer kernels add the same products
exactly, so the output is the same: the mobilediffusion UNet at 512 came out bit-identical
(max abs diff 0.0) and 1.14x faster (QLinearConv 136.7 -> 95.3 ms of 437 ms per call).

    conv weight codes q in [-127, 127], zero point 0  --> symmetric kernel
    codes q - 1 in [-128, 126], zero point -1         --> im2col + int8 GEMM (AMX where there is one)

Depthwise and other grouped convs, convs with a short reduction (the UNet's conv_in, 4 input
channels) and convs over large images were slower through the GEMM (depthwise 3.1 -> 5.9 ms in
all, conv_in 0.32 -> 0.75 ms; a 128-channel 3x3 conv at 512x512 0.65-0.70x, at 256x256 1.0x,
512 channels at 128x128 1.23x; every conv of the decoder at 512 routed: 0.81x, only those up to
128x128: 1.03x, bit-identical) and keep zero point 0. Without AMX the GEMM runs on the same VNNI or
AVX2 instructions as the symmetric kernel, plus im2col's copies, so the symmetric route stays there
(not timed: the host this was measured on has AMX). The route follows the flags of the CPU that
quantizes, is recorded in the manifest (int8_convs), and can be forced with
MD_EXPORT_INT8_CONV_ROUTE=symmetric|gemm: a phone's kernels are not the host's, so quantize with
`symmetric` for ARM (or time both there).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

CONV_ROUTE_ENV = "MD_EXPORT_INT8_CONV_ROUTE"
ROUTES = ("symmetric", "gemm")
# A conv routed through the GEMM needs a reduction (input channels x kernel area) at least this long
# and an output of at most this many pixels (im2col's buffer grows with both); a conv whose output
# shape the graph does not record stays where it is.
MIN_REDUCTION = 128
MAX_OUTPUT_PIXELS = 128 * 128


def choose_route() -> dict:
    """{"route", "reason"}: forced by CONV_ROUTE_ENV, else by this CPU's flags. By the flags, not by
    timing, so the same command on the same host writes the same file: a 320-channel probe conv
    read 0.55x and 2.51x through the GEMM a minute apart on the noisy Xeon, the model 1.13-1.14x."""
    import platform

    from ..runtimes.ort_cache import cpu_isa

    forced = os.environ.get(CONV_ROUTE_ENV, "")
    if forced and forced != "auto":
        if forced not in ROUTES:
            raise ValueError(f"{CONV_ROUTE_ENV} must be one of {', '.join(ROUTES + ('auto',))}, got {forced!r}")
        return {"route": forced, "reason": f"{CONV_ROUTE_ENV}={forced}"}
    if platform.machine().lower() in ("x86_64", "amd64") and "amx_int8" in cpu_isa():
        return {"route": "gemm", "reason": "x86 with AMX (amx_int8): onnxruntime's int8 GEMM runs on AMX tiles, "
                                           "its symmetric conv kernel does not"}
    return {"route": "symmetric", "reason": f"{platform.machine()} without AMX: the symmetric conv kernel "
                                            "skips im2col"}


def route_convs_through_gemm(path: Path) -> dict:
    """Rewrite, in place, the weights of `path`'s eligible QDQ convs to zero point -1 (same values).
    Returns {"routed", "kept"}: convs rewritten, convs left on the symmetric kernel."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    initializers = {t.name: t for t in graph.initializer}
    producers = {output: node for node in graph.node for output in node.output}
    uses: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    shapes = {info.name: [d.dim_value for d in info.type.tensor_type.shape.dim]
              for info in list(graph.value_info) + list(graph.output)}
    routed = kept = 0
    for node in graph.node:
        if node.op_type != "Conv":
            continue
        dequantize = producers.get(node.input[1])
        if dequantize is None or dequantize.op_type != "DequantizeLinear" or len(dequantize.input) < 3:
            kept += 1
            continue
        weight, zero_point = (initializers.get(name) for name in dequantize.input[0:3:2])
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        if weight is None or zero_point is None or group != 1 or \
                any(uses.get(name, 0) != 1 for name in dequantize.input[0:3:2]):
            kept += 1
            continue
        codes, zero = numpy_helper.to_array(weight), numpy_helper.to_array(zero_point)
        reduction = int(np.prod(codes.shape[1:]))
        output_shape = shapes.get(node.output[0], [])
        pixels = int(np.prod(output_shape[2:])) if len(output_shape) > 2 and all(output_shape[2:]) else None
        if codes.dtype != np.int8 or np.any(zero != 0) or codes.min() < -127 or reduction < MIN_REDUCTION \
                or pixels is None or pixels > MAX_OUTPUT_PIXELS:
            kept += 1
            continue
        weight.CopyFrom(numpy_helper.from_array((codes.astype(np.int16) - 1).astype(np.int8), weight.name))
        zero_point.CopyFrom(numpy_helper.from_array(np.full_like(zero, -1), zero_point.name))
        routed += 1
    if routed:
        temporary = path.with_name(path.name + ".routing")
        onnx.save(model, str(temporary))
        os.replace(temporary, path)
    return {"routed": routed, "kept": kept}
