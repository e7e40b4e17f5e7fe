"""Output parity: every artifact against the PyTorch reference, with declared tolerances as hard gates.

Metrics per output (float64): max abs error, mean abs error, cosine similarity, and PSNR in dB by
Apple's formula 20*log10(max|ref| / RMSE) (capped at 200 dB for an exact match, so JSON stays finite).
A failure is a `ParityFailure` (never a warning); the CLI exits non-zero on it.
"""

from __future__ import annotations

import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .errors import MdExportError
from .export.manifest import MANIFEST, ManifestError, read_manifest
from .export.types import Tolerance
from .runtimes import ArtifactLoadError, InputMismatchError, RuntimeUnavailableError, open_artifact

PSNR_CAP_DB = 200.0


class ParityFailure(MdExportError):
    """At least one artifact missed its declared tolerance, or could not be run."""


def psnr_db(reference: np.ndarray, actual: np.ndarray) -> float:
    reference = reference.astype(np.float64)
    rmse = float(np.sqrt(np.mean((reference - actual.astype(np.float64)) ** 2)))
    peak = float(np.max(np.abs(reference)))
    if rmse == 0.0:
        return PSNR_CAP_DB
    if peak == 0.0:
        return 0.0
    return min(PSNR_CAP_DB, 20.0 * float(np.log10(peak / rmse)))


def compare(reference: np.ndarray, actual: np.ndarray) -> dict[str, float]:
    if reference.shape != actual.shape:
        raise InputMismatchError(f"output shape {actual.shape} != reference {reference.shape}")
    ref = reference.astype(np.float64).ravel()
    act = actual.astype(np.float64).ravel()
    diff = np.abs(ref - act)
    norms = np.linalg.norm(ref) * np.linalg.norm(act)
    cosine = float(ref @ act / norms) if norms > 0 else float(np.array_equal(ref, act))
    return {
        "max_abs": float(diff.max()),
        "mean_abs": float(diff.mean()),
        "cosine": cosine,
        "psnr_db": psnr_db(reference, actual),
        "ref_max_abs": float(np.abs(ref).max()),
        "finite": bool(np.isfinite(act).all()),
    }


@dataclass
class ArtifactParity:
    file: str
    signature: str | None
    component: str
    format: str
    precision: str
    resolution: int | None
    status: str  # passed | failed | validated (Core ML off macOS) | error
    inputs: str = "seeded"
    outputs: dict[str, dict[str, float]] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    tolerance: dict = field(default_factory=dict)
    note: str = ""

    @property
    def ok(self) -> bool:
        return self.status in ("passed", "validated")


def load_reference(directory: Path, entry: dict, key: str = "reference") -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    path = directory / entry[key]
    if not path.is_file():
        raise ArtifactLoadError(f"reference {entry[key]} for {entry['file']} is missing")
    with np.load(path) as data:
        inputs = {k.removeprefix("input:"): data[k] for k in data.files if k.startswith("input:")}
        outputs = {k.removeprefix("output:"): data[k] for k in data.files if k.startswith("output:")}
    return inputs, outputs


def check_artifact(directory: Path, entry: dict, threads: int | None = None) -> ArtifactParity:
    result = ArtifactParity(entry["file"], entry.get("signature"), entry["component"], entry["format"],
                            entry["precision"], entry.get("resolution"), "error", tolerance=entry["tolerance"])
    tolerance = Tolerance.from_dict(entry["tolerance"])
    try:
        inputs, expected = load_reference(directory, entry)
        if entry["format"] == "coreml" and platform.system() != "Darwin":
            from .export.coreml import CoreMLValidationError, validate
            from .runtimes.open import verify_file

            verify_file(directory, entry)
            try:
                validate(directory / entry["file"], entry["inputs"], [o["name"] for o in entry["outputs"]])
            except CoreMLValidationError as exc:
                raise ArtifactLoadError(str(exc)) from None
            result.status = "validated"
            result.note = ("package validated (spec loads; inputs, outputs, shapes, dtypes match the manifest; "
                           "weights present); numerical parity needs macOS")
            recorded = entry.get("torch_parity")
            if recorded:  # W8A8: the fake-quantized torch model's metrics, checked against this gate
                result.inputs = "torch fake-quant: seeded + real (calibration)"
                for name, metrics in recorded["outputs"].items():
                    result.outputs[name] = metrics
                    if not metrics["finite"]:
                        result.violations.append(f"{name}: non-finite values")
                    result.violations += [f"{name}: {v}" for v in tolerance.violations(metrics)]
                result.note += f"; gate applied to the {recorded['measure']}"
                if result.violations:
                    result.status = "failed"
            return result
        runner = open_artifact(directory, entry, threads)
        checks = [("", inputs, expected)]
        if entry.get("real_reference"):  # real calibration inputs (quantized artifacts)
            result.inputs = "seeded + real (calibration)"
            checks.append(("@real",) + load_reference(directory, entry, "real_reference"))
        for label, feeds, outputs in checks:
            actual = _run_rows(runner, feeds)
            for name, reference in outputs.items():
                metrics = compare(reference, actual[name])
                result.outputs[name + label] = metrics
                if not metrics["finite"]:
                    result.violations.append(f"{name}{label}: non-finite values")
                result.violations += [f"{name}{label}: {v}" for v in tolerance.violations(metrics)]
        result.status = "failed" if result.violations else "passed"
    except (ArtifactLoadError, InputMismatchError, RuntimeUnavailableError) as exc:
        result.violations.append(str(exc))
    return result


def _run_rows(runner, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run a batch of samples one row at a time when the artifact's batch is fixed at 1."""
    rows = next(iter(feeds.values())).shape[0]
    fixed_batch = {spec.name: spec.shape[0] for spec in runner.inputs}
    if rows == 1 or all(b in (-1, rows) for b in fixed_batch.values()):
        return runner.run(feeds)
    outs = [runner.run({k: v[i:i + 1] for k, v in feeds.items()}) for i in range(rows)]
    return {name: np.concatenate([o[name] for o in outs]) for name in outs[0]}


@dataclass
class ParityReport:
    directory: str
    platform: str
    artifacts: list[ArtifactParity]

    @property
    def passed(self) -> bool:
        return bool(self.artifacts) and all(a.ok for a in self.artifacts)

    def as_dict(self) -> dict:
        return {"passed": self.passed, "directory": self.directory, "platform": self.platform,
                "psnr_formula": "20*log10(max|ref| / RMSE), capped at 200 dB",
                "artifacts": [asdict(a) for a in self.artifacts]}


# What parity reads from every manifest entry; a hand-edited or foreign manifest may lack any of them.
REQUIRED_ENTRY_KEYS = ("file", "component", "format", "precision", "reference", "tolerance", "inputs", "outputs")
REQUIRED_TOLERANCE_KEYS = ("min_psnr_db", "min_cosine")


def check_entries(directory: Path, manifest: dict) -> None:
    """Every artifact entry has what parity needs: a clear error naming the file and key, not a KeyError."""
    path = directory / MANIFEST
    for index, entry in enumerate(manifest["artifacts"]):
        if not isinstance(entry, dict):
            raise ManifestError(f"{path}: artifacts[{index}] is not an object")
        name = entry.get("file", f"artifacts[{index}]")
        for key in REQUIRED_ENTRY_KEYS:
            if key not in entry:
                raise ManifestError(f"{path}: entry {name} has no {key!r}")
        if not isinstance(entry["tolerance"], dict):
            raise ManifestError(f"{path}: entry {name} has a 'tolerance' that is not an object")
        for key in REQUIRED_TOLERANCE_KEYS:
            if key not in entry["tolerance"]:
                raise ManifestError(f"{path}: entry {name} has no {key!r} in its 'tolerance'")


def check_directory(directory: str | Path, threads: int | None = None, progress=None) -> ParityReport:
    directory = Path(directory)
    manifest = read_manifest(directory)
    check_entries(directory, manifest)
    results = []
    for entry in manifest["artifacts"]:
        if progress is not None:
            progress(f"{entry['file']}" + (f" [{entry['signature']}]" if entry.get("signature") else ""))
        results.append(check_artifact(directory, entry, threads))
    return ParityReport(str(directory), f"{platform.system()} {platform.machine()}", results)


def markdown(report: ParityReport) -> str:
    lines = [f"# Parity: {report.directory}", "",
             f"Overall: **{'PASSED' if report.passed else 'FAILED'}** ({report.platform}). "
             "PSNR = 20*log10(max|ref| / RMSE).", "",
             "| artifact | component | format | precision | res | output | max abs | mean abs | cosine | PSNR dB | status |",
             "| --- | --- | --- | --- | --- | --- | ---: | ---: | ---: | ---: | --- |"]
    for a in report.artifacts:
        name = a.file + (f" [{a.signature}]" if a.signature else "")
        if not a.outputs:
            lines.append(f"| {name} | {a.component} | {a.format} | {a.precision} | {a.resolution or ''} | | | | | | "
                         f"{a.status}: {'; '.join(a.violations) or a.note} |")
        for output, m in a.outputs.items():
            status = a.status if not a.violations else f"{a.status}: {'; '.join(a.violations)}"
            lines.append(f"| {name} | {a.component} | {a.format} | {a.precision} | {a.resolution or ''} | {output} | "
                         f"{m['max_abs']:.3g} | {m['mean_abs']:.3g} | {m['cosine']:.6f} | {m['psnr_db']:.1f} | {status} |")
    return "\n".join(lines) + "\n"
