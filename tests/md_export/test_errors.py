"""One error hierarchy: every error a user can cause derives from MdExportError (the CLI's one
line and non-zero exit), except md_export.models' own two, which the CLI names explicitly."""

import pytest

from md_export.calibration.builders import CalibrationError
from md_export.errors import MdExportError
from md_export.export.manifest import ManifestError
from md_export.export.types import ExportError
from md_export.parity import ParityFailure
from md_export.quantize.driver import QuantizeError, QuantizeGateFailure
from md_export.runtimes import ArtifactLoadError, InputMismatchError, RuntimeUnavailableError


@pytest.mark.parametrize("error", [CalibrationError, ManifestError, ExportError, ParityFailure, QuantizeError,
                                   QuantizeGateFailure, ArtifactLoadError, InputMismatchError,
                                   RuntimeUnavailableError])
def test_user_facing_errors_share_one_base(error):
    assert issubclass(error, MdExportError)


def test_input_mismatch_is_still_a_value_error():
    assert issubclass(InputMismatchError, ValueError)  # callers that catch ValueError keep working


def test_a_corrupt_artifact_is_one_line_and_exit_2(tmp_path, capsys):
    import json

    from md_export.cli import main

    (tmp_path / "model.fp32.onnx").write_bytes(b"not a model")
    entry = {"file": "model.fp32.onnx", "component": "model", "format": "onnx", "precision": "fp32",
             "sha256": "0" * 64, "inputs": [], "outputs": [], "reference": "reference/model.npz",
             "tolerance": {"min_psnr_db": 60.0}}
    (tmp_path / "manifest.json").write_text(json.dumps({"artifacts": [entry], "source": {}}))
    code = main(["bench", "run", "--artifacts", str(tmp_path), "--no-peak", "--no-progress", "--runs", "1"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and err.count("\n") == 1, err
