"""Calibration data from your own inputs, for any exported network (not only the presets).

Two routes write the same calibration directory `md-export quantize --calibration` reads
(`write_calibration` in builders.py: calibration.json + one safetensors file per component):

  calibrate_inputs(artifacts, inputs, out)   `md-export calibrate --artifacts DIR --inputs FILE|DIR`
      FILE: .npz or .safetensors, arrays keyed by input name (or `component/input` when the
      export holds several components), first axis = rows; DIR: .png/.jpg images for a network
      with one image input, resized to cover the input's H x W, center-cropped, scaled to
      [-1, 1] (or [0, 1]) float32 NCHW. Checked against the artifacts' manifest before writing.
  calibrate_module(module, samples, out, name="model")
      runs the module on each sample (dicts input name -> tensor/array, or a DataLoader of them)
      so torch checks the shapes, and records the samples for component `name`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from .builders import CalibrationError, write_calibration

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
IMAGE_RANGES = {"-1,1": (-1.0, 1.0), "0,1": (0.0, 1.0)}  # pixel 0 -> low, pixel 255 -> high


def artifact_inputs(artifacts: str | Path) -> dict[str, list[list[dict]]]:
    """component -> its distinct input lists ({"name", "shape", "dtype"}), one per resolution."""
    from md_export.export.manifest import read_manifest

    specs: dict[str, list[list[dict]]] = {}
    for entry in read_manifest(Path(artifacts))["artifacts"]:
        inputs = [{"name": i["name"], "shape": [int(d) for d in i["shape"]], "dtype": i["dtype"]} for i in entry["inputs"]]
        known = specs.setdefault(entry["component"], [])
        if inputs not in known:
            known.append(inputs)
    if not specs:
        raise CalibrationError(f"{artifacts} lists no artifacts to calibrate")
    return specs


def read_arrays(path: str | Path) -> dict[str, np.ndarray]:
    """The arrays of an .npz or .safetensors file, by key."""
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:  # no pickles: object arrays are refused
                arrays = {key: data[key] for key in data.files}
        elif suffix == ".safetensors":
            from safetensors.numpy import load_file

            arrays = load_file(str(path))
        else:
            raise CalibrationError(f"--inputs {path}: expected an .npz or .safetensors file of arrays keyed by "
                                   "input name, or a folder of .png/.jpg images")
    except CalibrationError:
        raise
    except Exception as exc:  # zip, pickle, header and dtype errors of the two readers
        raise CalibrationError(f"cannot read {path} as {suffix}: {exc}") from None
    if not arrays:
        raise CalibrationError(f"{path} holds no arrays")
    return arrays


def _numpy_dtype(dtype: str, where: str) -> np.dtype:
    try:
        return np.dtype(dtype)
    except TypeError:
        raise CalibrationError(f"{where} takes {dtype}, which calibration data cannot hold") from None


def _route(arrays: dict[str, np.ndarray], components: list[str], source: str) -> dict[str, dict[str, np.ndarray]]:
    """Keys `component/input`, or plain input names when the export holds one component."""
    routed: dict[str, dict[str, np.ndarray]] = {}
    for key, array in arrays.items():
        if "/" in key:
            component, name = key.split("/", 1)
            if component not in components:
                raise CalibrationError(f"{source}: key {key!r} names component {component!r}; the artifacts hold "
                                       f"{', '.join(components)}")
        elif len(components) == 1:
            component, name = components[0], key
        else:
            raise CalibrationError(f"{source}: key {key!r} has no component; the artifacts hold "
                                   f"{', '.join(components)}: name the arrays component/input (e.g. "
                                   f"{components[0]}/{key})")
        routed.setdefault(component, {})[name] = array
    return routed


def check_component(component: str, arrays: dict[str, np.ndarray], specs: list[list[dict]],
                    source: str) -> dict[str, np.ndarray]:
    """`arrays` (input name -> (rows, ...)) against one component's inputs: names, trailing shapes,
    numeric dtypes castable to the artifact's, equal row counts. Returns them cast."""
    expected_names = [i["name"] for i in specs[0]]
    unknown = sorted(set(arrays) - set(expected_names))
    missing = [n for n in expected_names if n not in arrays]
    if unknown or missing:
        parts = ([f"no input {', '.join(map(repr, unknown))}"] if unknown else []) + \
                ([f"missing input {', '.join(map(repr, missing))}"] if missing else [])
        raise CalibrationError(f"{source}: {component} has {' and '.join(parts)} (it takes {expected_names})")
    for name, array in arrays.items():
        if array.dtype.kind not in "biuf":
            raise CalibrationError(f"{source}: {component}.{name} is not numeric (dtype {array.dtype})")
        if array.ndim < 1:
            raise CalibrationError(f"{source}: {component}.{name} is a scalar; rows go on the first axis")
    fitting = [spec for spec in specs
               if all(list(arrays[i["name"]].shape[1:]) == i["shape"][1:] for i in spec)]
    if not fitting:
        def accepted(name: str) -> str:  # every resolution's row shape of one input
            return " or ".join(str(i["shape"][1:]) for spec in specs for i in spec if i["name"] == name)

        wrong = [f"{component}.{i['name']} rows are {list(arrays[i['name']].shape[1:])}, the artifact takes "
                 f"{accepted(i['name'])}" for i in specs[0] if list(arrays[i["name"]].shape[1:]) != i["shape"][1:]]
        if not wrong:  # every input fits some resolution, but not all the same one
            wrong = [f"{component} inputs {[list(a.shape[1:]) for a in arrays.values()]} fit no single resolution"]
        raise CalibrationError(f"{source}: {'; '.join(wrong)} (shapes after the row axis)")
    spec = fitting[0]
    rows = {name: array.shape[0] for name, array in arrays.items()}
    if len(set(rows.values())) > 1:
        raise CalibrationError(f"{source}: {component} inputs have different row counts {rows}")
    count = next(iter(rows.values()))
    batch = max((i["shape"][0] for i in spec if i["shape"]), default=1)
    if count < max(batch, 1):
        raise CalibrationError(f"{source}: {component} has {count} rows; the artifact takes {batch} per call")
    cast = {}
    for i in spec:
        target = _numpy_dtype(i["dtype"], f"{component}.{i['name']}")
        array = arrays[i["name"]]
        if not np.can_cast(array.dtype, target, casting="same_kind"):
            raise CalibrationError(f"{source}: {component}.{i['name']} is {array.dtype}, which does not cast to the "
                                   f"artifact's {target}")
        cast[i["name"]] = np.ascontiguousarray(array.astype(target))
    return cast


def image_component(specs: dict[str, list[list[dict]]]) -> tuple[str, dict]:
    """The one component whose only input is an image batch (N, 1 or 3, H, W), float."""
    found = [(component, options[0][0]) for component, options in specs.items()
             if len(options[0]) == 1 and len(options[0][0]["shape"]) == 4 and options[0][0]["shape"][1] in (1, 3)
             and options[0][0]["dtype"].startswith("float")]
    if not found:
        raise CalibrationError("a folder of images calibrates a network with one image input (N, 3 or 1, H, W); "
                               f"the artifacts hold {', '.join(specs)} with none: pass an .npz of arrays instead")
    if len(found) > 1:
        raise CalibrationError(f"a folder of images is ambiguous here: {', '.join(c for c, _ in found)} each take "
                               "one image: pass an .npz with arrays named component/input instead")
    component, spec = found[0]
    if len(specs[component]) > 1:
        raise CalibrationError(f"{component} is exported at several resolutions "
                               f"({', '.join(str(o[0]['shape'][2:]) for o in specs[component])}): pass an .npz "
                               "with the images at the one you calibrate")
    return component, spec


def load_images(folder: str | Path, channels: int, height: int, width: int, image_range: str = "-1,1") -> np.ndarray:
    """Every .png/.jpg in `folder` (sorted by name) as (N, channels, height, width) float32: resized
    so the image covers height x width, center-cropped, pixel values mapped to `image_range`."""
    from PIL import Image, UnidentifiedImageError

    if image_range not in IMAGE_RANGES:
        raise CalibrationError(f"--image-range takes {' or '.join(IMAGE_RANGES)}, got {image_range!r}")
    low, high = IMAGE_RANGES[image_range]
    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise CalibrationError(f"{folder} holds no {'/'.join(IMAGE_SUFFIXES)} images")
    images = []
    for file in files:
        try:
            with Image.open(file) as opened:
                image = opened.convert("RGB" if channels == 3 else "L")
        except (OSError, UnidentifiedImageError) as exc:
            raise CalibrationError(f"cannot read image {file}: {exc}") from None
        scale = max(height / image.height, width / image.width)
        size = (max(width, round(image.width * scale)), max(height, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.BICUBIC)
        left, top = (size[0] - width) // 2, (size[1] - height) // 2
        pixels = np.asarray(image.crop((left, top, left + width, top + height)), dtype=np.float32) / 255.0
        pixels = pixels[None] if channels == 1 else pixels.transpose(2, 0, 1)
        images.append(low + (high - low) * pixels)
    return np.stack(images).astype(np.float32)


def calibrate_inputs(artifacts: str | Path, inputs: str | Path, out: str | Path, *, image_range: str = "-1,1",
                     overwrite: bool = False) -> dict:
    """Calibration for the components of export directory `artifacts` from the user's `inputs` (see
    the module docstring); everything is checked before `out` is written. Returns calibration.json."""
    from md_export.export.manifest import check_output_dir, read_manifest

    check_output_dir(out, must_be_empty=not overwrite)  # before reading anything big
    specs = artifact_inputs(artifacts)
    inputs = Path(inputs)
    recorded: dict = {"kind": "user_inputs", "inputs": str(inputs.resolve()), "artifacts": str(Path(artifacts).resolve())}
    if inputs.is_dir():
        component, spec = image_component(specs)
        _, channels, height, width = spec["shape"]
        images = load_images(inputs, channels, height, width, image_range)
        routed = {component: {spec["name"]: images}}
        recorded["image_range"] = image_range
    elif inputs.is_file():
        routed = _route(read_arrays(inputs), list(specs), str(inputs))
    else:
        raise CalibrationError(f"--inputs {inputs} does not exist")
    shards = {component: check_component(component, arrays, specs[component], str(inputs))
              for component, arrays in routed.items()}
    manifest: dict = {"source": recorded}
    source = read_manifest(Path(artifacts)).get("source", {})
    if source.get("kind") == "preset":  # quantize checks a preset export's calibration by preset
        manifest["preset"] = source.get("preset")
    return write_calibration(out, shards, manifest, overwrite=overwrite)


def calibrate_module(module, samples, out: str | Path, name: str = "model", *, overwrite: bool = False) -> dict:
    """Record calibration data for the component `name` of `md_export.export_model(module, ...,
    name=name)`: `samples` is an iterable of dicts input name -> tensor or ndarray, batched on axis
    0 (a list of sample dicts, or a DataLoader yielding such dicts), or one such dict. The module
    runs on each (positionally, in the dict's order, as export_model calls it), so torch checks
    the shapes; the inputs are written as rows of `out` (calibration.json + `name`.safetensors).
    Returns calibration.json."""
    import torch

    from md_export.export.manifest import check_output_dir

    check_output_dir(out, must_be_empty=not overwrite)
    if isinstance(samples, Mapping):
        samples = [samples]
    if not isinstance(samples, Iterable):
        raise CalibrationError(f"samples must be dicts of input name -> tensor, or an iterable of them, "
                               f"got {type(samples).__name__}")
    names: list[str] | None = None
    rows: dict[str, list[np.ndarray]] = {}
    module.eval()
    for index, sample in enumerate(samples):
        if not isinstance(sample, Mapping) or not sample:
            raise CalibrationError(f"sample {index} is a {type(sample).__name__}, not a dict of input name -> tensor")
        if names is None:
            names = list(sample)
            rows = {key: [] for key in names}
        elif sorted(sample) != sorted(names):
            raise CalibrationError(f"sample {index} has inputs {sorted(sample)}, sample 0 had {sorted(names)}")
        tensors = []
        for key in names:
            value = sample[key]
            if isinstance(value, np.ndarray):
                value = torch.from_numpy(np.ascontiguousarray(value))
            if not isinstance(value, torch.Tensor):
                raise CalibrationError(f"sample {index} input {key!r} is a {type(value).__name__}, not a tensor or array")
            if value.is_complex():
                raise CalibrationError(f"sample {index} input {key!r} is complex ({value.dtype}): not calibration data")
            if value.ndim < 1:
                raise CalibrationError(f"sample {index} input {key!r} has no batch axis (shape {list(value.shape)})")
            tensors.append(value.detach().cpu())
        try:
            with torch.inference_mode():
                module(*tensors)
        except (RuntimeError, TypeError, ValueError, IndexError) as exc:
            raise CalibrationError(f"{name}: the module failed on sample {index} "
                                   f"({', '.join(f'{k} {list(t.shape)}' for k, t in zip(names, tensors))}): {exc}") from exc
        for key, tensor in zip(names, tensors):
            array = (tensor.float() if tensor.dtype == torch.bfloat16 else tensor).numpy()  # numpy has no bf16
            if rows[key] and array.shape[1:] != rows[key][0].shape[1:]:
                raise CalibrationError(f"sample {index} input {key!r} rows are {list(array.shape[1:])}, sample 0's "
                                       f"were {list(rows[key][0].shape[1:])}")
            rows[key].append(array)
    if names is None:
        raise CalibrationError("samples is empty: nothing to calibrate on")
    shards = {name: {key: np.concatenate(values) for key, values in rows.items()}}
    return write_calibration(out, shards, {"source": {"kind": "module", "class": type(module).__name__}},
                             overwrite=overwrite)
