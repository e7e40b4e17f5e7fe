"""The limit: the time this host cannot beat with this model.

    limit_ms = sum over components of (GFLOPs per call x calls) / measured peak of the component's precision

with the peaks of machine_peak.py (measured in the same run). A component computes in int8 when its
manifest precision says integer arithmetic runs (W8A8, dynamic-range): it is held against the int8
GEMM peak; everything else (fp32, fp16, weight-only int8/int4, palettized, w8a16) against fp32:
- fp16 on CPU: onnxruntime 1.32's CPU provider on x86 wraps fp16 Conv/MatMul in Casts and runs
  them in fp32 (the tiny UNet's optimized fp16 graph: 252 Casts), and the LiteRT fp16 recipe keeps
  fp32 compute; there is no fp16 GEMM probe to hold them against anyway.
- weight-only and palettized weights are expanded to float before the arithmetic.
- w8a16: onnxruntime has no fused int16-activation kernels; the QDQ pairs run as float.
Where a precision is held against int8 but part of the network stayed float (a --target-psnr
fallback), the int8 peak is the faster one, so the limit stays a floor, only a looser one.

`total_over_limit` is the measured median over the limit: 1.0 would be the GEMM peak throughout.
"""

from __future__ import annotations

# Manifest precisions (quantize/recipes.py labels) whose arithmetic runs in integers.
INTEGER_COMPUTE = frozenset({"int8", "int8-static", "int8-static-s8", "int8-dynamic", "int8-w8a8", "int4-blockwise"})


def compute_class(precision: str) -> str:
    """"int8" or "fp32": which measured peak a component of this manifest precision is held against."""
    return "int8" if precision in INTEGER_COMPUTE else "fp32"


def peak_for(precision: str, peak: dict | None) -> float | None:
    """GFLOP/s (fp32) or GOP/s (int8) of this host for work of `precision`; None without a peak."""
    if not peak:
        return None
    value = peak.get("int8_gops") if compute_class(precision) == "int8" else peak.get("fp32_gflops")
    return value or None


def limit_basis(work: dict[str, tuple[float | None, int]], precisions: dict[str, str], peak: dict | None) -> dict | None:
    """Per component: GFLOPs per call, calls, the manifest precision and the peak it is held against.
    `work` maps component -> (GFLOPs per call, calls per image). None when a number is missing."""
    basis = {}
    for component, (gflops, calls) in work.items():
        reference = peak_for(precisions[component], peak)
        if gflops is None or reference is None:
            return None
        basis[component] = {"gflops": gflops, "calls": calls, "precision": precisions[component],
                            "peak": "int8_gops" if compute_class(precisions[component]) == "int8" else "fp32_gflops",
                            "peak_value": reference}
    return basis


def limit_ms(basis: dict | None) -> float | None:
    if not basis:
        return None
    return sum(part["gflops"] * part["calls"] / part["peak_value"] for part in basis.values()) * 1e3


def limit_fields(basis: dict | None, median_ms: float | None) -> dict:
    """The item's keys: limit_ms, total_over_limit (median / limit) and the limit_basis behind them."""
    limit = limit_ms(basis)
    ratio = median_ms / limit if limit and median_ms is not None else None
    return {"limit_ms": round(limit, 6) if limit is not None else None,
            "total_over_limit": round(ratio, 3) if ratio is not None else None,
            "limit_basis": basis}
