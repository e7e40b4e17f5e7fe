"""coreml-w8a8: int8 weights and int8 activations for Core ML, calibrated on the PyTorch module.

Route (coremltools 9.0 + torch 2.13.0, what works here):
  1. `coremltools.optimize.torch.quantization.LinearQuantizer` (FX graph mode, symmetric scheme:
     per-channel qint8 weights, 8-bit activations with zero point 0 after non-negative ops and 128
     elsewhere) prepares the module; the calibration feeds run through it with observers on and
     fake quantization off (post-training calibration, min/max observers, no training); `finalize`
     gives a torch.ao "reference" model.
  2. That reference model holds torch quantized tensors (`torch.quantize_per_tensor` on
     activations, per-channel quantized weights inside reference Linear/Conv2d). torch.export
     cannot trace them ("quantized nyi in meta tensors"), and coremltools' documented
     `torch.jit.trace` route already fails on these networks in fp32 (DESIGN.md section 3; not
     retried). `lower` rewrites the graph, value for value, to `quantized_decomposed` ops on plain
     tensors: int8 weight buffers with `dequantize_per_channel`, `quantize_per_tensor`/
     `dequantize_per_tensor` on activations; embedding tables (left float by LinearQuantizer)
     become int8 rows the same way.
  3. The export's own Core ML conversion (torch.export -> coremltools mlprogram, iOS 17) turns
     those into `constexpr_affine_dequantize` int8 weights and `quantize`/`dequantize` activation
     ops in the package.
  The text encoder branches on `input_ids.shape`, which torch.fx cannot trace: it is quantized
  through `FixedLengthTextEncoder` (same weights, one token length, as the package has).
  torch 2.13 warns that torch.ao quantized tensors and FX quantization are deprecated; step 2
  removes them from what is exported, but step 1 depends on them.
  Not available here: the PT2E route (`CoreMLQuantizer` + `prepare_pt2e`/`convert_pt2e`):
  coremltools 9.0's `_coreml_quantizer` imports `torch.ao.quantization.quantizer`, which torch
  2.13 no longer has ("No module named 'torch.ao.quantization.quantizer'"; PT2E moved to torchao).
  Post-conversion `cto.coreml.experimental.linear_quantize_activations` calibrates by running the
  Core ML model, so it needs macOS.

Parity off macOS: the package cannot run on Linux (`MLModel.predict` needs macOS). The lowered
torch model is numerically the package's W8A8 program (same int8 weights, scales, zero points and
quantization points), so its output against fp32 torch, on the export's seeded inputs and on real
calibration inputs, is the parity measure recorded in the manifest and checked against the
recipe's gate. Core ML computes the float parts in fp16 on device, which this measure leaves out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..export.quiet import quiet

CALIBRATION_LIMIT = 64  # calibration samples through the observers (rows of batch 1)
PARITY_LIMIT = 16  # real calibration samples in the fake-quant parity measure


class W8A8Error(Exception):
    pass


def _ops():
    import torch.ao.quantization.fx._decomposed  # noqa: F401  registers torch.ops.quantized_decomposed

    return torch.ops.quantized_decomposed


class Int8WeightLinear(nn.Module):
    """Linear with int8 per-channel weights, dequantized in the graph (Core ML: constexpr weights)."""

    def __init__(self, reference: nn.Module):
        super().__init__()
        _store_weight(self, reference)
        self.bias = _bias(reference)

    def forward(self, x):
        return F.linear(x, _dequantized(self), self.bias)


class Int8WeightConv2d(nn.Module):
    def __init__(self, reference: nn.Module):
        super().__init__()
        if reference.padding_mode != "zeros":
            raise W8A8Error(f"conv padding_mode {reference.padding_mode!r} is not lowered (only zeros)")
        _store_weight(self, reference)
        self.bias = _bias(reference)
        self.stride, self.padding = reference.stride, reference.padding
        self.dilation, self.groups = reference.dilation, reference.groups

    def forward(self, x):
        return F.conv2d(x, _dequantized(self), self.bias, self.stride, self.padding, self.dilation, self.groups)


def _bias(reference: nn.Module) -> nn.Parameter | None:
    return None if reference.bias is None else nn.Parameter(reference.bias.detach().clone(), requires_grad=False)


def _store_weight(module: nn.Module, reference: nn.Module) -> None:
    qweight = reference.get_quantized_weight()
    if qweight.qscheme() != torch.per_channel_affine or qweight.dtype != torch.qint8:
        raise W8A8Error(f"weight quantized as {qweight.qscheme()} {qweight.dtype}; expected per-channel qint8")
    module.register_buffer("qweight", qweight.int_repr())
    module.register_buffer("weight_scale", qweight.q_per_channel_scales().to(torch.float32))
    module.register_buffer("weight_zero_point", qweight.q_per_channel_zero_points().to(torch.int32))
    module.axis = int(qweight.q_per_channel_axis())


class Int8WeightEmbedding(nn.Module):
    """Embedding table as int8 rows (symmetric, one scale per row): LinearQuantizer leaves
    embeddings float, and a CLIP token table is most of a text encoder's bytes."""

    def __init__(self, embedding: nn.Embedding):
        super().__init__()
        if embedding.max_norm is not None:
            raise W8A8Error("embedding with max_norm is not lowered")
        weight = embedding.weight.detach().to(torch.float32)
        scale = (weight.abs().amax(dim=1) / 127.0).clamp_min(torch.finfo(torch.float32).tiny)
        self.register_buffer("qweight", torch.round(weight / scale[:, None]).clamp(-127, 127).to(torch.int8))
        self.register_buffer("weight_scale", scale)
        self.register_buffer("weight_zero_point", torch.zeros(weight.shape[0], dtype=torch.int32))
        self.axis = 0
        self.padding_idx = embedding.padding_idx

    @property
    def weight(self) -> torch.Tensor:  # modules that read the table directly (CLIP position embeddings)
        return _dequantized(self)

    def forward(self, ids):
        return F.embedding(ids, _dequantized(self), self.padding_idx)


def _dequantized(module: nn.Module) -> torch.Tensor:
    return _ops().dequantize_per_channel.default(module.qweight, module.weight_scale, module.weight_zero_point,
                                                 module.axis, -128, 127, torch.int8)


_ACTIVATION_DTYPES = {torch.quint8: (torch.uint8, 0, 255), torch.qint8: (torch.int8, -128, 127)}


def _attribute(graph_module: nn.Module, node) -> torch.Tensor | float | int:
    if not isinstance(node, torch.fx.Node):
        return node
    if node.op != "get_attr":
        raise W8A8Error(f"quantization parameter {node.name} is computed ({node.op}), not a constant")
    value = graph_module
    for part in node.target.split("."):
        value = getattr(value, part)
    return value


def lower(reference: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """Rewrite a torch.ao reference model to quantized_decomposed ops on plain tensors (in place)."""
    from torch.ao.nn.quantized import reference as ref_modules

    ops = _ops()
    graph = reference.graph
    for node in list(graph.nodes):
        if node.op == "call_function" and node.target is torch.quantize_per_tensor:
            x, scale, zero_point, dtype = node.args
            scale, zero_point = float(_attribute(reference, scale)), int(_attribute(reference, zero_point))
            if dtype not in _ACTIVATION_DTYPES:
                raise W8A8Error(f"activation {node.name} quantized as {dtype}; expected quint8 or qint8")
            int_dtype, low, high = _ACTIVATION_DTYPES[dtype]
            args = (scale, zero_point, low, high, int_dtype)
            with graph.inserting_after(node):
                quantized = graph.call_function(ops.quantize_per_tensor.default, (x,) + args)
            for user in list(node.users):
                if not (user.op == "call_method" and user.target == "dequantize"):
                    raise W8A8Error(f"quantized activation {node.name} feeds {user.op} {user.target}, "
                                    "not a dequantize")
                with graph.inserting_after(user):
                    dequantized = graph.call_function(ops.dequantize_per_tensor.default, (quantized,) + args)
                user.replace_all_uses_with(dequantized)
                graph.erase_node(user)
            graph.erase_node(node)
    left = [n.name for n in graph.nodes if (n.op == "call_function" and n.target in (torch.quantize_per_tensor,
                                                                                   torch.quantize_per_channel))
            or (n.op == "call_method" and n.target == "dequantize")]
    if left:
        raise W8A8Error(f"quantized-tensor ops left after lowering: {', '.join(left[:5])}")
    graph.eliminate_dead_code()

    replacements = {ref_modules.Linear: Int8WeightLinear, ref_modules.Conv2d: Int8WeightConv2d}
    for name, module in list(reference.named_modules()):
        lowered = replacements.get(type(module))
        if lowered is None:
            if "quantized.reference" in type(module).__module__:
                raise W8A8Error(f"no lowering for {type(module).__name__} ({name})")
            continue
        parent_name, _, child = name.rpartition(".")
        setattr(reference.get_submodule(parent_name) if parent_name else reference, child, lowered(module))
    for name, module in list(reference.named_modules()):  # also inside modules FX left as leaves
        if isinstance(module, nn.Embedding):
            parent_name, _, child = name.rpartition(".")
            setattr(reference.get_submodule(parent_name) if parent_name else reference, child,
                    Int8WeightEmbedding(module))
    reference.delete_all_unused_submodules()
    reference.recompile()
    return reference


def _tensors(feed: dict[str, np.ndarray], names: Iterable[str]) -> tuple[torch.Tensor, ...]:
    return tuple(torch.from_numpy(np.ascontiguousarray(feed[name])) for name in names)


class FixedLengthTextEncoder(nn.Module):
    """The CLIP text encoder at one token length, as torch.fx can trace it: the original forward
    branches on `input_ids.shape` (FX: "symbolically traced variables cannot be used as inputs to
    control flow"). Same submodules and weights; the embeddings module stays an FX leaf (its
    gathers take no activation quantization; `lower` makes its token table int8)."""

    leaves = ["embeddings"]

    def __init__(self, encoder: nn.Module, length: int):
        super().__init__()
        self.embeddings, self.encoder = encoder.embeddings, encoder.encoder
        self.final_layer_norm = encoder.final_layer_norm
        self.register_buffer("mask", encoder.causal_mask[:length, :length].clone(), persistent=False)

    def forward(self, input_ids):
        return self.final_layer_norm(self.encoder(self.embeddings(input_ids), self.mask))


def traceable(module: nn.Module, sample_inputs: dict[str, torch.Tensor]) -> nn.Module:
    """The module in a form torch.fx symbolic tracing (LinearQuantizer.prepare) accepts."""
    from md_export.models.text_encoder import CLIPTextEncoder

    if isinstance(module, CLIPTextEncoder):
        return FixedLengthTextEncoder(module, next(iter(sample_inputs.values())).shape[1]).eval()
    return module


def calibrate(module: nn.Module, input_names: list[str], feeds: list[dict[str, np.ndarray]]) -> torch.fx.GraphModule:
    """LinearQuantizer, observers over `feeds`, finalize, lower: the W8A8 model as plain torch ops.
    `module` must trace with torch.fx (see `traceable`)."""
    if not feeds:
        raise W8A8Error("no calibration samples")
    with quiet():
        import coremltools.optimize.torch.quantization as cto_torch

        config = cto_torch.LinearQuantizerConfig(global_config=cto_torch.ModuleLinearQuantizerConfig(
            quantization_scheme="symmetric", weight_dtype=torch.qint8, weight_per_channel=True,
            activation_dtype=torch.quint8, activation_observer="min_max", weight_observer="min_max",
            # step 0: observers on; fake quantization never switched on: calibration sees fp32
            # activations, as post-training quantization does
            milestones=[0, 1 << 30, 1 << 30, 0]),
            non_traceable_module_names=list(getattr(module, "leaves", [])))
        quantizer = cto_torch.LinearQuantizer(module.eval(), config)
        prepared = quantizer.prepare(example_inputs=_tensors(feeds[0], input_names), inplace=False)
        quantizer.step()
        with torch.no_grad():
            for feed in feeds[:CALIBRATION_LIMIT]:
                prepared(*_tensors(feed, input_names))
        reference = quantizer.finalize(inplace=False)
        # torch warns that quantized tensors are deprecated: lowering is what removes them
        return lower(reference).eval()


def _outputs(result, output_names: list[str]) -> dict[str, np.ndarray]:
    if isinstance(result, torch.Tensor):
        result = (result,)
    elif isinstance(result, dict):
        result = tuple(result[name] for name in output_names)
    return {name: value.detach().numpy() for name, value in zip(output_names, result)}


def torch_parity(fp32: nn.Module, quantized: nn.Module, input_names: list[str], output_names: list[str],
                 checks: dict[str, tuple[dict[str, np.ndarray], dict[str, np.ndarray] | None]]) -> dict[str, dict]:
    """Per output and input set: metrics of the fake-quantized (W8A8) torch model against fp32.

    `checks` maps a label to (inputs with a batch dimension of rows, fp32 outputs or None to run
    `fp32` on them)."""
    from ..parity import compare

    metrics = {}
    with torch.no_grad():
        for label, (inputs, expected) in checks.items():
            rows = next(iter(inputs.values())).shape[0]
            per_row = [{k: v[i:i + 1] for k, v in inputs.items()} for i in range(rows)]
            actual = [_outputs(quantized(*_tensors(f, input_names)), output_names) for f in per_row]
            if expected is None:
                ran = [_outputs(fp32(*_tensors(f, input_names)), output_names) for f in per_row]
                expected = {n: np.concatenate([r[n] for r in ran]) for n in output_names}
            for name in output_names:
                metrics[f"{name}@{label}"] = compare(expected[name], np.concatenate([a[name] for a in actual]))
    return metrics


def _main_block(package):
    with quiet():
        import coremltools as ct

        spec = ct.utils.load_spec(str(package))
    function = spec.mlProgram.functions["main"]
    return function.block_specializations[function.opset]


def program_ops(package) -> dict[str, int]:
    """Op counts of a saved mlprogram's main function (top-level block)."""
    from collections import Counter

    return dict(Counter(op.type for op in _main_block(package).operations))


COMPUTE_OPS = ("conv", "linear", "matmul")


def activation_quantization(package) -> dict[str, int]:
    """The W8A8 evidence in a program: activation quantize/dequantize ops, int8 constexpr weights,
    and how many conv/linear/matmul ops take a dequantized (int8) activation as their input."""
    block = _main_block(package)
    producer = {output.name: op.type for op in block.operations for output in op.outputs}
    compute = [op for op in block.operations if op.type in COMPUTE_OPS]
    on_int8 = sum(producer.get(op.inputs["x"].arguments[0].name) == "dequantize" for op in compute)
    counts = program_ops(package)
    int8_weights = counts.get("constexpr_affine_dequantize", 0) + counts.get("constexpr_blockwise_shift_scale", 0)
    return {"quantize": counts.get("quantize", 0), "dequantize": counts.get("dequantize", 0),
            "int8_weights": int8_weights, "compute_ops": len(compute), "compute_ops_on_int8_activations": on_int8}


PARITY_MEASURE = ("fake-quantized torch model (the package's int8 weights, scales and activation quantization "
                  "points, fp32 arithmetic) against fp32 torch, on the export's seeded inputs and real calibration "
                  "inputs; the package itself runs only on macOS")


def require_preset_source(source: dict) -> None:
    if source.get("kind") != "preset":
        raise W8A8Error(f"W8A8 calibrates the PyTorch module, rebuilt from the export's preset; this export's source "
                        f"is {source.get('kind', 'unknown')!r} (export with md-export export --preset)")


def quantize(entry: dict, source: dict, artifacts: Path, package: Path, feeds: list[dict[str, np.ndarray]],
             tolerance, progress=None) -> dict:
    """W8A8 package for one exported network, rebuilt from the export manifest's `source`.

    Returns the extra manifest fields: the torch fake-quant parity (metrics, gate violations) and
    the program's quantization op counts."""
    from md_export.models import get_preset

    from ..export import coreml as backend
    from ..export.types import ExportTarget
    from ..torch_networks import load_module

    progress = progress or (lambda message: None)
    component = entry["component"]
    require_preset_source(source)
    preset = get_preset(source["preset"])
    loaded = load_module(preset, component, source.get("checkpoint_dir"), int(source.get("weight_seed", 0)))
    input_names = [i["name"] for i in entry["inputs"]]
    output_names = [o["name"] for o in entry["outputs"]]
    with np.load(Path(artifacts) / entry["reference"]) as data:
        seeded_inputs = {n: data[f"input:{n}"] for n in input_names}
        seeded_outputs = {n: data[f"output:{n}"] for n in output_names}
    sample = {n: torch.from_numpy(v[:1].copy()) for n, v in seeded_inputs.items()}
    module = traceable(loaded.module.eval(), sample)

    # the rebuilt module must be the one that was exported (same weights, same code)
    rebuilt = torch_parity(module, module, input_names, output_names, {"seeded": (seeded_inputs, seeded_outputs)})
    worst = min(m["psnr_db"] for m in rebuilt.values())
    if worst < 60.0:
        raise W8A8Error(f"the {component} rebuilt from {loaded.source} does not reproduce the export's reference "
                        f"outputs ({worst:.1f} dB): weights or model code changed since the export")

    progress(f"{component}: calibrating activations on {min(len(feeds), CALIBRATION_LIMIT)} samples")
    quantized = calibrate(module, input_names, feeds)
    picks = np.unique(np.linspace(0, len(feeds) - 1, min(PARITY_LIMIT, len(feeds))).round().astype(int))
    real = {n: np.concatenate([feeds[i][n] for i in picks]) for n in input_names}
    metrics = torch_parity(module, quantized, input_names, output_names,
                           {"seeded": (seeded_inputs, seeded_outputs), "real": (real, None)})
    violations = [f"{name}: {v}" for name, m in metrics.items() for v in tolerance.violations(m)]

    progress(f"{component}: converting to Core ML")
    target = ExportTarget(component, quantized, sample, tuple(output_names), entry.get("resolution"))
    backend.convert(target, backend.trace(target), package, "fp16")
    backend.validate(package, entry["inputs"], output_names)
    program = activation_quantization(package)
    if not program["compute_ops_on_int8_activations"] or not program["int8_weights"]:
        raise W8A8Error(f"the converted program has {program['compute_ops_on_int8_activations']} of "
                        f"{program['compute_ops']} conv/linear/matmul ops on int8 activations and "
                        f"{program['int8_weights']} int8 weights: W8A8 did not survive conversion")
    return {"torch_parity": {"measure": PARITY_MEASURE, "outputs": metrics, "violations": violations},
            "w8a8_program": program, "calibration_samples": min(len(feeds), CALIBRATION_LIMIT),
            "calibrated_module": f"{preset.name} {component}: {loaded.source}"}
