"""The main job's opening picture: the trained `mobilediffusion-micro` weights that ship with the
package draw one caption, and the fidelity scorer measures the picture (a second or two)."""

from __future__ import annotations

from pathlib import Path

from md_export.models import get_preset
from md_export.models.presets import MICRO_PRESET
from md_export.models.shipped_weights import shipped_weights_dir

from .images import save_png
from .pipeline import TextToImagePipeline
from .quality.scorer import fidelity, score_image
from .torch_networks import torch_networks

DEMO_PROMPT = "a green triangle on the left"


def micro_picture(out: str | Path, prompt: str = DEMO_PROMPT, seed: int = 0, file: str = "micro.png") -> dict:
    """Write OUT/micro.png; return what the report shows (or why there is no picture)."""
    preset = get_preset(MICRO_PRESET)
    if shipped_weights_dir(preset.name) is None:
        return {"prompt": prompt, "error": f"no trained weights shipped for {preset.name}"}
    networks, sources = torch_networks(preset)
    result = TextToImagePipeline(networks, preset.unet.prediction_type).generate(
        prompt, preset.default_steps, seed, guidance_scale=preset.guidance_scale)
    save_png(result.image, Path(out) / file)
    verdicts = score_image(result.image, prompt)
    return {"file": file, "prompt": prompt, "seed": seed, "steps": preset.default_steps, "preset": preset.name,
            "fidelity": round(fidelity(verdicts), 4), "verdicts": verdicts, "seconds": round(result.seconds["total"], 2),
            "weights": sources["unet"]}


def micro_markdown(micro: dict, main_preset: str) -> list[str]:
    if micro.get("error"):
        return ["## A real picture first (mobilediffusion-micro)", "", f"Skipped: {micro['error']}.", ""]
    verdicts = ", ".join(f"{k} {'ok' if all(v) else 'wrong'}" for k, v in micro["verdicts"].items())
    return ["## A real picture first (mobilediffusion-micro, trained weights shipped with the package)", "",
            f"![micro]({micro['file']}) \"{micro['prompt']}\", 64x64, {micro['steps']} DDIM steps, seed {micro['seed']}, "
            f"{micro['seconds']:.2f} s. Fidelity (measured, no learned judge): **{micro['fidelity']:.0%}** "
            f"({verdicts}). The rest of this report is the {main_preset} preset.", ""]
