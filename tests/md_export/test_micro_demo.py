import numpy as np
from PIL import Image

from md_export.micro_demo import DEMO_PROMPT, micro_markdown, micro_picture


def test_main_job_opening_picture_is_written_and_scored(tmp_path):
    micro = micro_picture(tmp_path)
    image = np.asarray(Image.open(tmp_path / "micro.png"))
    assert image.shape == (64, 64, 3) and image.std() > 10  # a picture, not a flat field
    assert micro["prompt"] == DEMO_PROMPT and 0.0 <= micro["fidelity"] <= 1.0
    assert set(micro["verdicts"]) == {"color", "shape", "position"}
    text = "\n".join(micro_markdown(micro, "mobilediffusion-tiny"))
    assert "![micro](micro.png)" in text and f"{micro['fidelity']:.0%}" in text
