import platform

import pytest

from md_export.runtimes import RuntimeUnavailableError
from md_export.runtimes.coreml_runner import CoreMLRunner


@pytest.mark.skipif(platform.system() == "Darwin", reason="on macOS Core ML runs; this checks the Linux refusal")
def test_coreml_runner_says_it_needs_macos(tmp_path):
    with pytest.raises(RuntimeUnavailableError, match="Core ML needs macOS"):
        CoreMLRunner(tmp_path / "unet.fp16.mlpackage")
