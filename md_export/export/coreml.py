"""Core ML export: torch.export -> coremltools mlprogram (.mlpackage), iOS 17 target.

Route: `coremltools.convert(torch.export.export(m, args).run_decompositions({}))`; the
`torch.jit.trace` route failed here (DESIGN.md section 3). Packages convert and validate on Linux;
running them (`MLModel.predict`) needs macOS. fp16 is Core ML's default compute precision.
Multi-resolution: one package per resolution (iOS 17 has no multifunction packages).
"""

from __future__ import annotations

import datetime
import json
import os
import stat
import uuid
from pathlib import Path

import numpy as np
import torch

from .quiet import quiet
from .types import ExportError, ExportTarget, Tolerance, ToleranceTable

TOLERANCES = ToleranceTable({
    ("*", "fp32"): Tolerance(min_psnr_db=60.0, min_cosine=0.99999, max_abs_rel=1e-3),
    ("*", "fp16"): Tolerance(min_psnr_db=35.0, min_cosine=0.999),  # Apple's gate
})

# Core ML has no int64 inputs on the Neural Engine path: token ids go in as int32.
_DTYPES = {torch.float32: np.float32, torch.int64: np.int32, torch.int32: np.int32}


def trace(target: ExportTarget):
    """torch.export once per network and shape; every precision converts from the same program."""
    try:
        with quiet():
            return torch.export.export(target.module, target.args()).run_decompositions({})
    except Exception as exc:
        raise ExportError(f"coreml export of {target.tag} failed in torch.export: {str(exc).splitlines()[0]}") from exc


def convert(target: ExportTarget, program, path: Path, precision: str = "fp16") -> Path:
    with quiet():  # coremltools warns at import about untested torch / scikit-learn versions
        import coremltools as ct

    try:
        with quiet():
            inputs = [ct.TensorType(name=name, shape=tuple(t.shape), dtype=_DTYPES[t.dtype])
                      for name, t in target.sample_inputs.items()]
            outputs = [ct.TensorType(name=name) for name in target.output_names]
            model = ct.convert(
                program, convert_to="mlprogram", minimum_deployment_target=ct.target.iOS17,
                compute_precision=ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32,
                inputs=inputs, outputs=outputs,
            )
    except Exception as exc:
        raise ExportError(f"coreml export of {target.tag} failed: {str(exc).splitlines()[0]}") from exc
    model.short_description = f"md_export {target.tag} ({precision})"
    model.save(str(path))
    make_reproducible(path)
    return path


# the namespace of the package items' uuid5 identifiers: any fixed value; changing it changes every hash
_ITEM_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "md_export:coreml:mlpackage-item")
_CONVERSION_DATE = "com.github.apple.coremltools.conversion_date"


def make_reproducible(package: Path) -> Path:
    """Make a saved .mlpackage a function of its contents, so equal exports are equal bytes.

    coremltools writes two things that change from one save to the next: Manifest.json names its
    items (model.mlmodel, weights/) by random uuid4s, and model.mlmodel is the spec serialized with
    protobuf's map order (op inputs, attributes, metadata), which differs between processes. Here
    each item's identifier becomes a uuid5 of its author and path, and the spec is re-serialized
    with sorted map keys. The spec's conversion date (a day) is SOURCE_DATE_EPOCH's day when that
    is set (the reproducible-builds convention). weight.bin is already deterministic.
    """
    from .manifest import write_bytes_atomic

    with quiet():
        import coremltools as ct

    package = Path(package)
    manifest_path = package / "Manifest.json"
    manifest = json.loads(manifest_path.read_text())
    renamed = {old: str(uuid.uuid5(_ITEM_NAMESPACE, f"{item['author']}/{item['path']}"))
               for old, item in manifest["itemInfoEntries"].items()}
    manifest["itemInfoEntries"] = {renamed[old]: item for old, item in manifest["itemInfoEntries"].items()}
    manifest["rootModelIdentifier"] = renamed[manifest["rootModelIdentifier"]]
    root = manifest["itemInfoEntries"][manifest["rootModelIdentifier"]]
    spec_path = package / "Data" / root["path"]

    spec = ct.proto.Model_pb2.Model()
    spec.ParseFromString(spec_path.read_bytes())
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    metadata = spec.description.metadata.userDefined
    if epoch and _CONVERSION_DATE in metadata:
        day = datetime.datetime.fromtimestamp(int(epoch), datetime.timezone.utc)
        metadata[_CONVERSION_DATE] = day.strftime("%Y-%m-%d")
    write_bytes_atomic(spec_path, spec.SerializeToString(deterministic=True),
                       mode=stat.S_IMODE(spec_path.stat().st_mode))
    # the layout coremltools' ModelPackage writes (4-space indent, sorted keys), new identifiers
    write_bytes_atomic(manifest_path, (json.dumps(manifest, indent=4, sort_keys=True) + "\n").encode(),
                       mode=stat.S_IMODE(manifest_path.stat().st_mode))
    return package


class CoreMLValidationError(Exception):
    pass


def describe(path: Path) -> dict:
    """Inputs/outputs (name, shape, dtype) and weight presence of a saved package, without macOS."""
    with quiet():
        import coremltools as ct

    path = Path(path)
    weights = path / "Data" / "com.apple.CoreML" / "weights" / "weight.bin"
    try:
        spec = ct.utils.load_spec(str(path))
    except Exception as exc:
        raise CoreMLValidationError(f"{path.name}: not a loadable Core ML package ({exc})") from None
    dtype_names = {ct.proto.FeatureTypes_pb2.ArrayFeatureType.FLOAT32: "float32",
                   ct.proto.FeatureTypes_pb2.ArrayFeatureType.FLOAT16: "float16",
                   ct.proto.FeatureTypes_pb2.ArrayFeatureType.INT32: "int32"}

    def features(items) -> list[dict]:
        out = []
        for item in items:
            array = item.type.multiArrayType
            out.append({"name": item.name, "shape": [int(d) for d in array.shape],
                        "dtype": dtype_names.get(array.dataType, str(array.dataType))})
        return out

    return {
        "inputs": features(spec.description.input),
        "outputs": features(spec.description.output),
        "spec_version": spec.specificationVersion,
        "weights_bytes": weights.stat().st_size if weights.is_file() else 0,
    }


def validate(path: Path, expected_inputs: list[dict], expected_outputs: list[str]) -> dict:
    """What Linux can prove about a package: spec loads, I/O names/shapes/dtypes, weights present."""
    info = describe(path)
    problems = []
    by_name = {f["name"]: f for f in info["inputs"]}
    for spec in expected_inputs:
        got = by_name.get(spec["name"])
        want_dtype = "int32" if spec["dtype"] in ("int64", "int32") else "float32"
        if got is None:
            problems.append(f"missing input {spec['name']}")
        elif got["shape"] != list(spec["shape"]) or got["dtype"] != want_dtype:
            problems.append(f"input {spec['name']} is {got['shape']} {got['dtype']}, manifest says "
                            f"{list(spec['shape'])} {want_dtype}")
    output_names = [f["name"] for f in info["outputs"]]
    if output_names != list(expected_outputs):
        problems.append(f"outputs {output_names} != manifest {list(expected_outputs)}")
    if info["weights_bytes"] == 0:
        problems.append("no weights in the package (Data/com.apple.CoreML/weights/weight.bin)")
    if problems:
        raise CoreMLValidationError(f"{Path(path).name}: " + "; ".join(problems))
    return info
