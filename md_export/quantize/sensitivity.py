"""Per-block int8 sensitivity and the automatic float fallback (ONNX static recipes).

    calibrate once (ranges cached) ─┬─ for each PyTorch block B: quantize only B, PSNR vs fp32 ─> ranking
                                    └─ fallback: quantize all but the k most sensitive blocks,
                                       k = 0, 1, 2, ... until the output PSNR reaches the target

Blocks are PyTorch module names recovered from the TorchScript exporter's node names
("/down_blocks.1/attentions.0/transformer_blocks.0/attn2/to_q/MatMul" ->
"down_blocks.1.attentions.0.transformer_blocks.0"), so the report speaks the model's language.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..parity import compare
from . import onnx_recipes
from .kernels import module_name

GRAPH_GROUP = "(graph)"


# Module lists whose index names a block (to_out.0 is a Linear, not a block).
CONTAINERS = {"down_blocks", "up_blocks", "resnets", "attentions", "transformer_blocks", "layers", "mid_resnets"}


def block_of(node_name: str) -> str:
    """Group key: the module path up to its second block index (down_blocks.1.attentions.0,
    up_blocks.0.resnets.2), or its first (mid_attention.transformer_blocks.7, encoder.layers.3),
    or the top-level module (conv_in, time_embedding). Nodes without a module path: "(graph)"."""
    path = module_name(node_name)
    if not path:
        return GRAPH_GROUP
    tokens = path.split(".")
    cuts = [i + 1 for i in range(1, len(tokens)) if tokens[i].isdigit() and tokens[i - 1] in CONTAINERS]
    return ".".join(tokens[: cuts[min(1, len(cuts) - 1)]]) if cuts else tokens[0]


def quantizable_blocks(onnx_path: Path) -> dict[str, list[str]]:
    """Block -> every node name in it (QDQ quantizes Add, Mul, Concat... too, not only Conv/MatMul)."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    blocks: dict[str, list[str]] = {}
    for node in model.graph.node:
        blocks.setdefault(block_of(node.name), []).append(node.name)
    return blocks


def mean_psnr(reference_path: Path, candidate_path: Path, feeds: list[dict], output: str | None = None,
              reference_outputs: list[np.ndarray] | None = None) -> float:
    from ..runtimes.onnx_runner import OnnxRunner

    candidate = OnnxRunner(candidate_path)
    name = output or candidate.output_names[0]
    if reference_outputs is None:
        reference = OnnxRunner(reference_path)
        reference_outputs = [reference.run(f)[name] for f in feeds]
    return float(np.mean([compare(ref, candidate.run(f)[name])["psnr_db"] for ref, f in zip(reference_outputs, feeds)]))


@dataclass
class FallbackResult:
    target_psnr_db: float
    reached: bool
    plain_psnr_db: float
    final_psnr_db: float
    float_blocks: list[str] = field(default_factory=list)
    sensitivity: list[dict] = field(default_factory=list)  # [{"module", "psnr_db", "nodes"}], most sensitive first
    trail: list[dict] = field(default_factory=list)  # [{"float_blocks": k, "psnr_db": x}]


def static_with_fallback(fp32_path: Path, out: Path, feeds: list[dict], eval_feeds: list[dict], target_psnr: float,
                         kind: str = "static_int8", max_float_blocks: int | None = None,
                         progress: Callable[[str], None] | None = None, ranges: str = "minmax") -> FallbackResult:
    """Quantize with `kind` (static_int8 / w8a16); keep the most sensitive blocks float until the
    mean output PSNR on `eval_feeds` reaches `target_psnr`. Writes the final model to `out`."""
    from ..runtimes.onnx_runner import OnnxRunner

    quantize = getattr(onnx_recipes, kind)
    progress = progress or (lambda message: None)
    reference = OnnxRunner(fp32_path)
    output = reference.output_names[0]
    reference_outputs = [reference.run(f)[output] for f in eval_feeds]

    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        cache = work / "ranges.json"
        # Node names must be the ones quantize_static sees: preprocess once, group that graph.
        model = onnx_recipes.preprocess(fp32_path, work)
        blocks = quantizable_blocks(model)
        all_nodes = {n for nodes in blocks.values() for n in nodes}

        def attempt(path: Path, excluded: list[str]) -> float:
            quantize(model, path, feeds, nodes_to_exclude=excluded, cache=cache, preprocessed=True, ranges=ranges)
            return mean_psnr(fp32_path, path, eval_feeds, output, reference_outputs)

        progress("calibrating and quantizing everything")
        plain = attempt(work / "plain.onnx", [])
        result = FallbackResult(target_psnr, plain >= target_psnr, plain, plain)
        result.trail.append({"float_blocks": 0, "psnr_db": round(plain, 2)})
        if plain >= target_psnr:
            (work / "plain.onnx").replace(out)
            return result

        for index, (block, nodes) in enumerate(sorted(blocks.items())):
            progress(f"sensitivity {index + 1}/{len(blocks)}: {block}")
            only = attempt(work / "one.onnx", sorted(all_nodes - set(nodes)))
            result.sensitivity.append({"module": block, "psnr_db": round(only, 2), "nodes": len(nodes)})
        result.sensitivity.sort(key=lambda row: row["psnr_db"])

        # Each full quantization is expensive (onnxruntime's QDQ pass is quadratic in graph size):
        # grow the float set 1, 2, 4, ... then bisect between the last miss and the first hit.
        limit = len(result.sensitivity) if max_float_blocks is None else min(max_float_blocks, len(result.sensitivity))
        tried: dict[int, tuple[float, Path]] = {}

        def try_count(count: int) -> float:
            excluded_blocks = [row["module"] for row in result.sensitivity[:count]]
            progress(f"fallback: {count} block(s) float (most sensitive: {excluded_blocks[0]})")
            path = work / f"fallback-{count}.onnx"
            psnr = attempt(path, [n for b in excluded_blocks for n in blocks[b]])
            tried[count] = (psnr, path)
            result.trail.append({"float_blocks": count, "psnr_db": round(psnr, 2)})
            return psnr

        miss, hit, count = 0, None, 1
        while count <= limit:
            if try_count(count) >= target_psnr:
                hit = count
                break
            miss, count = count, count * 2
        if hit is None and miss < limit and limit not in tried:
            if try_count(limit) >= target_psnr:
                hit = limit
        while hit is not None and hit - miss > 1:
            middle = (hit + miss) // 2
            if try_count(middle) >= target_psnr:
                hit = middle
            else:
                miss = middle
        chosen = hit if hit is not None else max(tried)
        result.reached = hit is not None
        result.final_psnr_db = tried[chosen][0]
        result.float_blocks = [row["module"] for row in result.sensitivity[:chosen]]
        result.trail.sort(key=lambda row: row["float_blocks"])
        tried[chosen][1].replace(out)
    return result
