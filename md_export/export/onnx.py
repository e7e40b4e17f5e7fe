"""ONNX export: TorchScript-based `torch.onnx.export` (opset 18), checked, fp16 by onnxruntime's converter.

Why the TorchScript exporter: onnxruntime's static quantization calibrates the graphs it writes,
and failed on the dynamo exporter's GroupNorm (DESIGN.md section 3). Both give ~1e-7 fp32 error.
Networks over 1 GB of weights (the `mobilediffusion` and SD-1.5 UNets) go through the dynamo
exporter instead, for its memory (`DYNAMO_FROM_BYTES`), with its tensors in one `.data` file next
to the model and its nodes named after their modules (`scope_node_names`). GroupNorm goes out as
LayerNormalization over each group, which onnxruntime runs on every thread (`onnx_group_norm`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .onnx_group_norm import group_norms_as_layer_norm, share_layer_norm_scales
from .quiet import quiet
from .split_projections import gated_projections_split
from .types import ExportError, ExportTarget, Tolerance, ToleranceTable

OPSET = 18
TWO_GB = 2 * 1024**3
# Networks with this many bytes of weights go through the dynamo exporter, which streams their
# tensors to `<file>.data`: the TorchScript exporter holds the weights four times over while it
# serialises (the 1.56 GB `mobilediffusion` UNet at 512: 7.3 GB peak in a process of its own,
# 1.9 GB through dynamo, outputs bit-identical on onnxruntime, the same speed: 892 / 881 ms).
# Without onnxscript's optimizer (optimize=False): with it, 1.2 GB of the weights stayed alive
# after the export (freeing the module's parameters then gave back 0.3 GB instead of 1.5 GB), and
# onnxruntime optimises the graph at load anyway.
DYNAMO_FROM_BYTES = 1024**3

# fp32: the same math in another engine, errors are float reassociation only.
# fp16: Apple's 35 dB gate (DESIGN.md section 2) on activations computed in half precision.
TOLERANCES = ToleranceTable({
    ("*", "fp32"): Tolerance(min_psnr_db=60.0, min_cosine=0.99999, max_abs_rel=1e-3),
    ("*", "fp16"): Tolerance(min_psnr_db=35.0, min_cosine=0.999),
})


def _topologically_sorted(model):
    """The fp16 converter appends its input casts at the end of the node list; ONNX wants them first."""
    import onnx_ir as ir
    from onnx_ir.passes.common import TopologicalSortPass

    graph = ir.from_proto(model)
    TopologicalSortPass()(graph)
    return ir.to_proto(graph)


def convert(target: ExportTarget, path: Path, dynamic_batch: bool = False) -> Path:
    """Write the fp32 model to `path` (and `path.data` when the weights pass 2 GB). `path` should be
    in a fresh directory: for large models the exporter spills per-tensor files beside it first."""
    import onnx

    input_names = list(target.sample_inputs)
    output_names = list(target.output_names)
    dynamic_axes = {name: {0: "batch"} for name in input_names + output_names} if dynamic_batch else None
    large = _weight_bytes(target) >= DYNAMO_FROM_BYTES
    try:
        with quiet(), gated_projections_split([target.module]), group_norms_as_layer_norm([target.module]) as norms:
            if large:
                program = torch.onnx.export(target.module, target.args(), input_names=input_names,
                                            output_names=output_names, opset_version=OPSET, dynamo=True,
                                            dynamic_axes=dynamic_axes, external_data=True, optimize=False)
                program.save(str(path), external_data=True)  # tensors stream to path.data
                del program
            else:
                torch.onnx.export(target.module, target.args(), str(path), input_names=input_names,
                                  output_names=output_names, opset_version=OPSET, dynamo=False,
                                  dynamic_axes=dynamic_axes, do_constant_folding=True)
    except Exception as exc:  # the exporter raises many types; name the network and the reason
        raise ExportError(f"onnx export of {target.tag} failed: {str(exc).splitlines()[0]}") from exc
    if large:
        graph = onnx.load(str(path), load_external_data=False)  # the graph only: a few MB
        scope_node_names(graph)
        onnx.save_model(graph, str(path))  # its tensors stay in path.data, referenced by name
    elif norms:  # the GroupNorms' full-length ones and zeros; without norms the file is not read again
        graph = onnx.load(str(path))
        if share_layer_norm_scales(graph):
            onnx.save_model(graph, str(path))
    onnx.checker.check_model(str(path))
    return path


def scope_node_names(model) -> None:
    """Name the dynamo exporter's nodes as the TorchScript exporter does, after the module that made
    them ("node_conv2d_13" -> "/down_blocks.2.resnets.0.conv1.pointwise/node_conv2d_13"), from the
    `namespace` it records on each node, so that per-block sensitivity and the per-module kernel
    reports read both graphs alike (`kernels.module_name`)."""
    for node in model.graph.node:
        namespace = next((p.value for p in node.metadata_props if p.key == "namespace"), "")
        # ": pkg.MobileUNet/down_blocks.2: pkg.UNetLevel/.../conv2d_13: aten.conv2d.default"
        modules = [segment.split(":")[0].strip() for segment in namespace.split("/")[:-1]]
        path = next((m for m in reversed(modules) if m), "")
        if path and not node.name.startswith("/"):
            node.name = f"/{path}/{node.name}"


def to_fp16(fp32_path: Path, path: Path, node_block_list: list[str] | None = None,
            scan_feeds: list[dict[str, np.ndarray]] | None = None):
    """fp16 weights and compute, fp32 inputs/outputs (keep_io_types), by onnxruntime's converter.

    With `scan_feeds`, the fp16 overflow check runs first (fp16_overflow.scan): nodes whose values
    exceed the fp16 range on those inputs stay fp32, added to `node_block_list`, and the converted
    model must give finite outputs on them. Returns the scan (None without feeds)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    from . import fp16_overflow

    blocked = list(node_block_list or [])
    overflow = None
    if scan_feeds:
        overflow = fp16_overflow.scan(fp32_path, scan_feeds)
        blocked += [n for n in overflow.blocked_nodes if n not in blocked]
    model = convert_float_to_float16(onnx.load(str(fp32_path)), keep_io_types=True, node_block_list=blocked or None)
    if blocked:
        _drop_fp16_round_trips(model, set(blocked))
    save_model(_topologically_sorted(model), path)
    onnx.checker.check_model(str(path))
    if scan_feeds:
        fp16_overflow.check_finite(path, scan_feeds)
    return overflow


def _drop_fp16_round_trips(model, fp32_nodes: set[str]) -> None:
    """Between two fp32-kept nodes the converter still routes the tensor through Cast(fp16) ->
    Cast(fp32), which overflows exactly the values the block list is for: connect them directly."""
    from onnx import TensorProto

    def cast_to(node) -> int | None:
        return next((a.i for a in node.attribute if a.name == "to"), None) if node.op_type == "Cast" else None

    producer = {out: node for node in model.graph.node for out in node.output}
    rewired: dict[str, str] = {}
    for node in model.graph.node:
        first = producer.get(node.input[0]) if cast_to(node) == TensorProto.FLOAT else None
        if first is None or cast_to(first) != TensorProto.FLOAT16:
            continue
        source = producer.get(first.input[0])
        if source is not None and source.name in fp32_nodes:
            rewired[node.output[0]] = first.input[0]
    if not rewired:
        return
    for node in model.graph.node:
        for index, name in enumerate(node.input):
            if name in rewired:
                node.input[index] = rewired[name]
    graph_outputs = {o.name for o in model.graph.output}
    while True:  # drop the casts nobody reads any more
        used = {name for node in model.graph.node for name in node.input} | graph_outputs
        dead = [n for n in model.graph.node if n.op_type == "Cast" and not any(o in used for o in n.output)]
        if not dead:
            break
        for node in dead:
            model.graph.node.remove(node)
    stale = [v for v in model.graph.value_info if v.name in rewired.values()]
    for value in stale:  # the converter typed these fp16; they are fp32 again
        model.graph.value_info.remove(value)


def _weight_bytes(target: ExportTarget) -> int:
    return sum(p.numel() * p.element_size() for p in target.module.parameters())


def save_model(model, path: Path) -> None:
    """Inline, or with every tensor in one `<file>.data` when the weights pass protobuf's 2 GB."""
    import onnx

    # protobuf cannot serialise a message over 2 GB: count the initializers' bytes instead
    large = sum(len(t.raw_data) for t in model.graph.initializer) > TWO_GB * 0.9
    onnx.save_model(model, str(path), save_as_external_data=large, all_tensors_to_one_file=True,
                    location=path.name + ".data" if large else None)
