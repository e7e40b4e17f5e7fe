"""ONNX export of GroupNorm as LayerNormalization over each group, for onnxruntime's CPU kernels.

    nn.GroupNorm as exported:  x ─ Reshape (N, G, L) ─ InstanceNormalization ─ Reshape ─ Mul ─ Add
    here:                      x ─ Reshape (N, G, L) ─ LayerNormalization    ─ Reshape ─ Mul ─ Add
                                                        (axis -1, scale: ones of length L,
                                                         L = C/G x H x W)

onnxruntime runs InstanceNormalization on one thread, LayerNormalization over its rows on all of
them, one pass each. A (1, 32, 1M) tensor, 2-core Xeon, 2 threads: 46.5 ms as InstanceNormalization,
25.1 ms as LayerNormalization (84.0 ms with a scale of shape [1] that the kernel broadcasts,
145.5 ms as MeanVarianceNormalization). The affine stays the per-channel Mul and Add.

The exporters write the scale as a full-length constant: the TorchScript exporter as a Constant of
L ones with a Constant of L zeros for the bias (42 MB more in the 512 light VAE decoder's 39 MB
file), the dynamo exporter as an Expand of one. `share_layer_norm_scales` rewrites the first as one
ConstantOfShape per distinct length, which onnxruntime folds when it loads the graph (8 MB in the
decoder's cached optimized graph, `runtimes/ort_cache.py`), and drops the zero bias.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .method_swap import method_swapped


def _group_norm_by_layer_norm(self, x: torch.Tensor) -> torch.Tensor:
    # The group's length as a plain int: LayerNormalization's scale has this shape, and with a
    # dynamic batch axis the traced shape would be symbolic. Channels and spatial sizes are static.
    length = math.prod(int(size) for size in x.shape[1:]) // self.num_groups
    grouped = x.reshape(x.shape[0], self.num_groups, length)
    normed = F.layer_norm(grouped, (length,), eps=self.eps).reshape(x.shape)
    if not self.affine:
        return normed
    per_channel = (-1,) + (1,) * (x.dim() - 2)
    return normed * self.weight.reshape(per_channel) + self.bias.reshape(per_channel)


def group_norms_as_layer_norm(modules) -> contextlib.AbstractContextManager[int]:
    """While converting to ONNX, each nn.GroupNorm below `modules` runs as a layer norm over its
    groups (same math; the module docstring has the kernels' times). Restored on exit; yields how
    many norms were switched."""
    return method_swapped(modules, lambda m: type(m) is nn.GroupNorm, "forward", _group_norm_by_layer_norm)


def share_layer_norm_scales(model) -> int:
    """Rewrite, in place, each LayerNormalization whose scale is a Constant node of ones (and whose
    bias is absent or a Constant of zeros) to read one ConstantOfShape per distinct scale shape and
    dtype, and drop the bias. Returns how many nodes were rewritten."""
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    constants = {node.output[0]: node for node in graph.node if node.op_type == "Constant"}

    def value(name: str) -> np.ndarray | None:
        # Constant nodes only: that is how the exporter writes F.layer_norm's absent weight and
        # bias. Initializers are parameters (nn.LayerNorm's weight at init is ones too): kept.
        attribute = constants[name].attribute[0] if name in constants else None
        return numpy_helper.to_array(attribute.t) if attribute is not None and attribute.name == "value" else None

    shared: dict[tuple[int, tuple[int, ...]], str] = {}
    new_nodes, rewritten, replaced = [], 0, set()
    for node in graph.node:
        if node.op_type != "LayerNormalization" or len(node.input) < 2:
            continue
        scale = value(node.input[1])
        has_bias = len(node.input) > 2 and bool(node.input[2])
        bias = value(node.input[2]) if has_bias else None
        if scale is None or not np.all(scale == 1) or (has_bias and (bias is None or np.any(bias != 0))):
            continue
        dtype = helper.np_dtype_to_tensor_dtype(scale.dtype)
        key = (dtype, tuple(scale.shape))
        if key not in shared:
            base = f"layer_norm_ones_{'x'.join(map(str, scale.shape))}_{TensorProto.DataType.Name(dtype).lower()}"
            graph.initializer.append(numpy_helper.from_array(np.array(scale.shape, np.int64), f"{base}_shape"))
            new_nodes.append(helper.make_node("ConstantOfShape", [f"{base}_shape"], [base], name=base,
                                              value=helper.make_tensor("one", dtype, [1], [1])))
            shared[key] = base
        replaced.update(name for name in node.input[1:] if name)
        node.input[1] = shared[key]
        del node.input[2:]
        rewritten += 1
    for node in reversed(new_nodes):  # first: ONNX wants producers before consumers
        graph.node.insert(0, node)
    used = {name for node in graph.node for name in node.input} | {out.name for out in graph.output}
    orphans = replaced - used
    for node in [n for n in graph.node if n.op_type == "Constant" and n.output[0] in orphans]:
        graph.node.remove(node)
    return rewritten
