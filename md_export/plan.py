"""`md-export plan`: the shipping configuration of one runtime, chosen by measurement.

  1. candidates per component: the fp32 artifact and every recipe of the runtime's format
     (quantized into OUT/quantized/<recipe>; a recipe that fails to convert is a row, not a crash);
     with --alt-decoder PRESET, that preset's decoder too (the TAESD-style one of
     `mobilediffusion-taesd`), fp32 and every recipe, under OUT/decoders/PRESET/: candidates named
     PRESET/RECIPE, held to the same gates against the plan's own fp32 torch pipeline
  2. each component artifact timed on its reference inputs, in alternation with its rivals; a
     configuration's end-to-end estimate = text + UNet calls x steps + decoder
  3. each quantized decoder alone on the fp32 torch pipeline's own latents: one that misses the
     image gate there is screened out, its configurations not evaluated; the other
     configurations evaluated in increasing estimate: final-image PSNR against the fp32 torch
     pipeline and, where the weights are trained, the prompt-fidelity gate; the first to pass all
     gates is the choice (the all-fp32 configuration is also evaluated, as the reference row)
  4. the choice and the all-fp32 configuration timed end to end as whole pipelines, warm (each
     network called once on its reference input when opened): the image gate's own call of the
     first prompt, then more calls in alternation; beside the estimate and the host's limit
  5. OUT/plan.json and OUT/plan.md

Estimates rank, whole pipelines confirm: timing every one of up to 5^3 pipelines would cost more
than the choice is worth; each component is called the same way in every configuration, so the
sum of per-call medians ranks them, and step 4 times the one that ships.
"""

from __future__ import annotations

import datetime
import itertools
import math
import statistics
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from md_export.models import Preset

from .errors import BadArgumentError, MdExportError
from .export.manifest import read_manifest, write_json_atomic, write_text_atomic
from .pipeline import Generation, Networks, TextToImagePipeline
from .runtimes import open_artifact
from .runtimes.base import Runner

Progress = Callable[[str], None]
# (configuration, prompt, seed, what it generated) of every image-gate picture: the main job saves them
OnGeneration = Callable[["Configuration", str, int, Generation], None]
COMPONENTS = ("text_encoder", "unet", "vae_decoder")
FP32 = "fp32"
RUNTIME_FORMATS = {"onnxruntime": "onnx", "litert": "tflite"}
RUNTIME_RECIPES = {
    "onnxruntime": ("onnx-fp16", "onnx-dynamic-int8", "onnx-static-int8"),
    "litert": ("tflite-fp16", "tflite-dynamic-int8", "tflite-static-int8", "tflite-weight-only-int8"),
}
DEFAULT_MIN_PSNR_DB = 30.0
NO_GATE_REASON = "md-export plan gates the final image of each configuration instead"


@dataclass(frozen=True)
class PlanSettings:
    runtime: str
    steps: int | None = None  # None: the preset's default
    prompts: int = 2  # prompts of the image PSNR gate (seeds 0, 1, ...)
    min_psnr_db: float = DEFAULT_MIN_PSNR_DB
    timing_runs: int = 5  # alternating timed calls per component artifact
    fidelity_prompts: int = 20  # held-out prompts of the fidelity gate (trained weights only)
    # failing configurations evaluated before giving up: each costs a full pipeline run per prompt,
    # and a long run of failures says the recipes do not fit this model, not that one more might
    max_evaluations: int = 12
    calibration_prompts: int = 4
    calibration_steps: int = 2
    checkpoint_dir: str | None = None
    seed: int = 0
    # the image gate's prompts (default: the first `prompts` calibration prompts, seeds seed, seed+1, ...)
    prompt_texts: tuple[str, ...] | None = None
    # step 4: warm end-to-end calls of the choice and of fp32: the image gate's own call of the first
    # prompt, then pipeline_runs - 1 alternating ones (0: skip, and nothing is warmed)
    pipeline_runs: int = 3
    # other presets' VAE decoders to consider, (preset name, checkpoint directory or None): the
    # decoder is a choice like a recipe (the light one or a TAESD-style one), if its latent space fits
    alt_decoders: tuple[tuple[str, str | None], ...] = ()

    def check(self) -> None:
        if self.runtime not in RUNTIME_RECIPES:
            raise BadArgumentError(f"--runtime must be one of {', '.join(RUNTIME_RECIPES)}, got {self.runtime!r}")
        for flag, value in (("--prompts", self.prompts), ("--timing-runs", self.timing_runs),
                            ("--fidelity-prompts", self.fidelity_prompts),
                            ("--max-evaluations", self.max_evaluations)):
            if value < 1:
                raise BadArgumentError(f"{flag} must be at least 1, got {value}")
        if self.pipeline_runs < 0:
            raise BadArgumentError(f"--pipeline-runs must be >= 0, got {self.pipeline_runs}")
        if self.steps is not None and self.steps < 1:
            raise BadArgumentError(f"--steps must be at least 1, got {self.steps}")

    def gate_prompts(self) -> list[tuple[str, int]]:
        """(prompt, seed) of every image-gate picture."""
        from md_export.calibration.builders import load_prompts

        texts = list(self.prompt_texts) if self.prompt_texts else load_prompts()[:self.prompts]
        return [(prompt, self.seed + index) for index, prompt in enumerate(texts)]


@dataclass(frozen=True)
class ComponentCandidate:
    component: str
    recipe: str  # a recipe name, or "fp32"
    directory: str | None = None
    entry: dict | None = field(default=None, hash=False, compare=False)
    ms: float | None = None  # median per call
    error: str | None = None


@dataclass(frozen=True)
class Evaluation:
    image_psnr_db: tuple[float, ...]
    fidelity: dict | None  # None: not measured (random weights)
    passed: bool
    reason: str
    seconds: tuple[dict, ...] = ()  # per gate prompt: generate()'s stage seconds


# ---- 1. candidates ---------------------------------------------------------------------------

def alt_decoder_of(recipe: str) -> str | None:
    """The preset whose decoder a candidate named PRESET/RECIPE is (None: the plan's own)."""
    return recipe.split("/", 1)[0] if "/" in recipe else None


def check_alt_decoders(preset: Preset, settings: PlanSettings) -> list[Preset]:
    """The --alt-decoder presets, each checked to decode this preset's latents: the same latent
    channels and the same downsampling (each decoder graph applies its own latent scale)."""
    from md_export.models import get_preset

    alternatives = []
    for name, checkpoint_dir in settings.alt_decoders:
        if "/" in name:
            raise BadArgumentError(f"--alt-decoder takes a preset name, got {name!r}")
        alt = get_preset(name)
        ours = (preset.vae.latent_channels, preset.vae.downsample_factor)
        theirs = (alt.vae.latent_channels, alt.vae.downsample_factor)
        if theirs != ours:
            raise BadArgumentError(
                f"--alt-decoder {name}: its decoder takes {theirs[0]}-channel latents at 1/{theirs[1]} scale, "
                f"{preset.name}'s UNet makes {ours[0]}-channel latents at 1/{ours[1]}")
        if alt.vae.decoder == preset.vae.decoder and checkpoint_dir == settings.checkpoint_dir:
            raise BadArgumentError(f"--alt-decoder {name}: the same decoder with the same weights as "
                                   f"{preset.name}'s (give another checkpoint: PRESET=CHECKPOINT_DIR)")
        alternatives.append(alt)
    return alternatives


def _entry(directory: Path, component: str, fmt: str, resolution: int) -> dict | None:
    entries = [e for e in read_manifest(directory)["artifacts"] if e["component"] == component and e["format"] == fmt]
    # an export at several resolutions: the plan is for the preset's own
    entries = [e for e in entries if e.get("resolution") in (None, resolution)] or entries[:0]
    return entries[0] if entries else None


def prepare_candidates(preset: Preset, out: Path, settings: PlanSettings, artifacts: Path | None,
                       calibration: Path | None, overwrite: bool, progress: Progress,
                       quantized: dict[str, Path] | None = None, steps: int | None = None) -> list[ComponentCandidate]:
    """Export (unless given), calibrate (if a recipe needs it and none is given), quantize.
    `quantized` (recipe -> directory): recipes already quantized from `artifacts` (the main job's);
    they are the only recipes then, and nothing is quantized again. `steps`: the plan's sampler
    steps; a calibration made here takes the decoder's latents from runs of that many steps and
    leaves the image gate's prompts out."""
    from md_export.calibration.builders import CalibrationSettings, build_calibration

    from .export import export_preset
    from .quantize.driver import quantize_directory
    from .quantize.recipes import get_recipe

    fmt = RUNTIME_FORMATS[settings.runtime]
    if artifacts is None:
        artifacts = out / "artifacts"
        progress(f"export fp32 {fmt}")
        export_preset(preset, COMPONENTS, (fmt,), (FP32,), artifacts, checkpoint_dir=settings.checkpoint_dir,
                      progress=lambda m: progress(f"export: {m}"))
    if quantized is not None:
        return _fp32_candidates(artifacts, fmt, preset) + [
            c for name, directory in quantized.items()
            for c in _recipe_candidates(name, Path(directory), fmt, preset)] + _alt_decoder_candidates(
            preset, out, settings, calibration, [get_recipe(name) for name in quantized], progress)
    recipes = [get_recipe(name) for name in RUNTIME_RECIPES[settings.runtime]]
    if calibration is None and any(r.calibration for r in recipes):
        calibration = out / "calibration"
        progress("calibration")
        build_calibration(preset, calibration,
                          CalibrationSettings(num_prompts=settings.calibration_prompts,
                                              steps=settings.calibration_steps, seed=settings.seed,
                                              guidance_scale=preset.guidance_scale,
                                              checkpoint_dir=settings.checkpoint_dir, photos=2,
                                              decoder_steps=steps,
                                              held_out_prompts=tuple(p for p, _ in settings.gate_prompts())),
                          lambda done, total, message: progress(f"calibration: {message}"), overwrite=overwrite)
    candidates = _fp32_candidates(artifacts, fmt, preset)
    for recipe in recipes:
        target = out / "quantized" / recipe.name
        progress(f"quantize {recipe.name}")
        try:
            quantize_directory(artifacts, recipe.name, target, calibration, speed_runs=0, gate=False,
                               no_gate_reason=NO_GATE_REASON, progress=lambda m: progress(f"quantize: {m}"))
        except MdExportError as exc:  # a converter's limit on this network is a finding, not the end
            progress(f"quantize {recipe.name}: FAILED: {exc}")
            candidates += [ComponentCandidate(c, recipe.name, error=str(exc)) for c in COMPONENTS]
            continue
        candidates += _recipe_candidates(recipe.name, target, fmt, preset)
    return candidates + _alt_decoder_candidates(preset, out, settings, calibration, recipes, progress)


def _alt_decoder_candidates(preset: Preset, out: Path, settings: PlanSettings, calibration: Path | None,
                            recipes: list, progress: Progress) -> list[ComponentCandidate]:
    """Each --alt-decoder preset's decoder at this plan's resolution: its fp32 export and every
    recipe, into OUT/decoders/PRESET/. A calibrated recipe reads the decoder rows (the final
    latents) of this plan's calibration: the same latent space, recorded as that preset's."""
    from md_export.calibration.builders import CalibrationError, load_calibration, write_calibration

    from .export import export_preset
    from .quantize.driver import quantize_directory

    fmt = RUNTIME_FORMATS[settings.runtime]
    candidates = []
    for alt, (name, checkpoint_dir) in zip(check_alt_decoders(preset, settings), settings.alt_decoders):
        base = out / "decoders" / name
        progress(f"alternative decoder {name}: export fp32 {fmt}")
        export_preset(alt, ("vae_decoder",), (fmt,), (FP32,), base / "artifacts", resolutions=[preset.resolution],
                      checkpoint_dir=checkpoint_dir, progress=lambda m: progress(f"export: {m}"))
        entry = _entry(base / "artifacts", "vae_decoder", fmt, preset.resolution)
        candidates.append(ComponentCandidate("vae_decoder", f"{name}/{FP32}", str(base / "artifacts"), entry))
        alt_calibration, no_calibration = None, "no calibration to quantize with"
        if calibration is not None and any(r.calibration for r in recipes):
            try:
                latents = load_calibration(calibration, "vae_decoder")
            except CalibrationError as exc:
                no_calibration = f"no decoder rows in {calibration}: {exc}"
            else:
                alt_calibration = base / "calibration"
                write_calibration(alt_calibration, {"vae_decoder": latents},
                                  {"preset": name, "source": {"kind": "plan_alt_decoder",
                                                              "latents_from": str(Path(calibration).resolve())}},
                                  overwrite=True)
        for recipe in recipes:
            label = f"{name}/{recipe.name}"
            if recipe.calibration and alt_calibration is None:
                candidates.append(ComponentCandidate("vae_decoder", label, error=no_calibration))
                continue
            target = base / "quantized" / recipe.name
            progress(f"alternative decoder {name}: quantize {recipe.name}")
            try:
                quantize_directory(base / "artifacts", recipe.name, target, alt_calibration, speed_runs=0, gate=False,
                                   no_gate_reason=NO_GATE_REASON, progress=lambda m: progress(f"quantize: {m}"))
            except MdExportError as exc:
                candidates.append(ComponentCandidate("vae_decoder", label, error=str(exc)))
                continue
            entry = _entry(target, "vae_decoder", fmt, preset.resolution)
            candidates.append(ComponentCandidate("vae_decoder", label, str(target), entry) if entry is not None
                              else ComponentCandidate("vae_decoder", label, error="no artifact for this component"))
    return candidates


def calibration_notes(calibration: Path, steps: int, gate_prompts: list[tuple[str, int]]) -> list[str]:
    """What in a calibration directory does not match this plan: the decoder's latents from runs of
    another step count (with random weights a latent's scale follows the step count: an int8
    decoder calibrated on 2-step latents read 28.9 dB on a 4-step pipeline's, 38.5-39.2 dB on
    4-step ones), or the image gate's own prompts among those calibrated on."""
    from md_export.calibration.builders import read_calibration_manifest

    manifest = read_calibration_manifest(calibration)
    notes = []
    decoder_steps = manifest.get("decoder_steps", manifest.get("steps"))
    if decoder_steps is not None and decoder_steps != steps:
        notes.append(f"the calibration's decoder latents come from {decoder_steps}-step runs and this plan samples "
                     f"{steps} steps: recalibrate with md-export calibrate --decoder-steps {steps}")
    calibrated = set(manifest.get("prompts") or ()) | set(manifest.get("decoder_prompts") or ())
    shared = [prompt for prompt, _ in gate_prompts if prompt in calibrated]
    if shared:
        notes.append(f"{len(shared)} image gate prompt(s) are in the calibration set ({shared[0]!r}): the gate "
                     "judges inputs the ranges were fitted to")
    return notes


def _fp32_candidates(artifacts: Path, fmt: str, preset: Preset) -> list[ComponentCandidate]:
    candidates = []
    for component in COMPONENTS:
        entry = _entry(artifacts, component, fmt, preset.resolution)
        if entry is None or entry["precision"] != FP32:
            raise BadArgumentError(f"{artifacts} has no fp32 {fmt} {component} at {preset.resolution}: export it "
                                   f"with --formats {fmt}")
        candidates.append(ComponentCandidate(component, FP32, str(artifacts), entry))
    return candidates


def _recipe_candidates(recipe: str, directory: Path, fmt: str, preset: Preset) -> list[ComponentCandidate]:
    candidates = []
    for component in COMPONENTS:
        entry = _entry(directory, component, fmt, preset.resolution) if (directory / "manifest.json").exists() else None
        candidates.append(ComponentCandidate(component, recipe, str(directory), entry) if entry is not None
                          else ComponentCandidate(component, recipe, error="no artifact for this component"))
    return candidates


# ---- 2. timing -------------------------------------------------------------------------------

def open_candidate(candidate: ComponentCandidate) -> Runner:
    """The runner of one component artifact (the test monkeypatches this to break one)."""
    return open_artifact(candidate.directory, candidate.entry, ort_cache=True)


def time_candidates(candidates: list[ComponentCandidate], runs: int, progress: Progress) -> list[ComponentCandidate]:
    """Median ms per call of every runnable candidate, on its export's reference inputs. The rivals
    of one component are called in alternation, so background load weighs on all of them alike."""
    from .parity import load_reference

    timed = []
    for component in COMPONENTS:
        group = [c for c in candidates if c.component == component and c.error is None]
        runners, feeds = {}, {}
        for candidate in group:
            try:
                runners[candidate.recipe] = open_candidate(candidate)
                feeds[candidate.recipe] = load_reference(Path(candidate.directory), candidate.entry)[0]
                runners[candidate.recipe].run(feeds[candidate.recipe])  # warm-up: allocation, pre-packing
            except Exception as exc:  # a runtime that refuses a converted graph: a row with its reason
                runners.pop(candidate.recipe, None)
                reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
                timed.append(replace(candidate, error=f"does not run: {reason}"))
        samples: dict[str, list[float]] = {name: [] for name in runners}
        progress(f"timing {component}: {', '.join(runners)}")
        for _ in range(runs):
            for name, runner in runners.items():
                start = time.perf_counter()
                runner.run(feeds[name])
                samples[name].append(time.perf_counter() - start)
        timed += [replace(c, ms=round(statistics.median(samples[c.recipe]) * 1e3, 3))
                  for c in group if c.recipe in samples]
    timed += [c for c in candidates if c.error is not None]
    return timed


# A caller's benchmark times each artifact directory as a group, minutes apart; on a noisy host
# that drift exceeds the gap between near-equal rivals. Measured on the 2-core AVX2 EPYC of README
# command 1: its benchmark put LiteRT's dynamic int8 UNet 17% ahead of its fp32 one (2527 against
# 3062 ms), while their per-op profiles, back to back, were 2255 against 2299 ms. Rivals this close
# are timed again here, in alternation, so the drift weighs on both alike.
CLOSE_RIVALS = 0.25
# A component under a second a call is timed again whatever the gap: its caller's median of three
# such calls is at the mercy of one burst of the host's noise, and a re-time costs seconds. On the
# same host, README command 1's benchmark put LiteRT's dynamic int8 text encoder 0.76x of its fp32
# one (139.3 against 106.4 ms); called in alternation a minute later, 1.23x (72.6 against 89.0 ms).
SHORT_CALL_MS = 1000.0


def retime_close_rivals(candidates: list[ComponentCandidate], runs: int, progress: Progress
                        ) -> tuple[list[ComponentCandidate], list[str]]:
    """The components whose runnable candidates' medians (from elsewhere) lie within CLOSE_RIVALS
    of the fastest, or whose fastest takes under SHORT_CALL_MS, re-timed with time_candidates; the
    others keep their numbers."""
    close = []
    for component in COMPONENTS:
        times = [c.ms for c in candidates if c.component == component and c.error is None]
        if len(times) > 1 and (max(times) <= min(times) * (1 + CLOSE_RIVALS) or min(times) < SHORT_CALL_MS):
            close.append(component)
    if not close:
        return candidates, []
    retimed = time_candidates([c for c in candidates if c.component in close and c.error is None], runs, progress)
    by_key = {(c.component, c.recipe): c for c in retimed}
    return [by_key.get((c.component, c.recipe), c) for c in candidates], close


def unet_calls_per_step(entry: dict, guidance: bool) -> int:
    """Classifier-free guidance runs the UNet on a batch of 2 per step: one call of a batch-2 UNet,
    two of a batch-1 one."""
    latent = next(i for i in entry["inputs"] if i["name"] == "latent")
    batch = latent["shape"][0] if isinstance(latent["shape"][0], int) and latent["shape"][0] > 0 else 1
    return math.ceil((2 if guidance else 1) / batch)


# ---- 3. configurations -----------------------------------------------------------------------

@dataclass(frozen=True)
class Configuration:
    parts: tuple[ComponentCandidate, ComponentCandidate, ComponentCandidate]  # text, unet, decoder

    def recipes(self) -> dict[str, str]:
        return {c.component: c.recipe for c in self.parts}

    def estimate_ms(self, steps: int, guidance: bool) -> float:
        text, unet, decoder = self.parts
        return text.ms + unet.ms * unet_calls_per_step(unet.entry, guidance) * steps + decoder.ms


def configurations(candidates: list[ComponentCandidate], steps: int, guidance: bool) -> list[tuple[float, Configuration]]:
    per_component = [[c for c in candidates if c.component == component and c.error is None] for component in COMPONENTS]
    configs = [Configuration(tuple(parts)) for parts in itertools.product(*per_component)]
    ranked = [(round(c.estimate_ms(steps, guidance), 3), c) for c in configs]
    # ties (equal estimates): fewer quantized components first, then by name, so the order is stable
    return sorted(ranked, key=lambda item: (item[0], sum(p.recipe != FP32 for p in item[1].parts),
                                            tuple(p.recipe for p in item[1].parts)))


class Reference:
    """The fp32 torch pipeline's images (per prompt and seed) and, with trained weights, its
    fidelity report; computed once per plan. A caller that already drew some images (the main
    job's torch reference) passes them with their weights' `sources`: the torch networks are then
    built only if a picture or a fidelity run is missing."""

    def __init__(self, preset: Preset, resolution: int, checkpoint_dir: str | None, weight_seed: int = 0,
                 sources: dict[str, str] | None = None, images: dict[tuple, np.ndarray] | None = None,
                 latents: dict[tuple, np.ndarray] | None = None):
        self._args = (preset, resolution, checkpoint_dir, weight_seed)
        self._pipeline = None
        if sources is None:
            self._build()
        else:
            self.sources = sources
        self.trained = not all(text.startswith("random") for text in self.sources.values())
        self._images: dict[tuple, np.ndarray] = dict(images or {})  # (prompt, steps, seed, guidance) -> image
        self._latents: dict[tuple, np.ndarray] = dict(latents or {})  # the same keys -> final latent
        self._fidelity = None

    def _build(self) -> None:
        from .torch_networks import torch_networks

        preset, resolution, checkpoint_dir, weight_seed = self._args
        networks, self.sources = torch_networks(preset, resolution, checkpoint_dir, weight_seed)
        self._pipeline = TextToImagePipeline(networks, preset.unet.prediction_type)

    @property
    def pipeline(self) -> TextToImagePipeline:
        if self._pipeline is None:
            self._build()
        return self._pipeline

    def image(self, prompt: str, steps: int, seed: int, guidance: float) -> np.ndarray:
        key = (prompt, steps, seed, guidance)
        if key not in self._images:
            self._draw(key)
        return self._images[key]

    def latent(self, prompt: str, steps: int, seed: int, guidance: float) -> np.ndarray:
        """The final latent torch's picture was decoded from (the decoder screen's input)."""
        key = (prompt, steps, seed, guidance)
        if key not in self._latents:
            self._draw(key)
        return self._latents[key]

    def image_psnr(self, image: np.ndarray, prompt: str, steps: int, seed: int, guidance: float) -> float:
        """PSNR in dB (2 decimals) of a uint8 picture against torch's of the same prompt and seed."""
        from .parity import psnr_db

        return round(psnr_db(self.image(prompt, steps, seed, guidance).astype(np.float64),
                             image.astype(np.float64)), 2)

    def _draw(self, key: tuple) -> None:
        prompt, steps, seed, guidance = key
        generation = self.pipeline.generate(prompt, steps, seed, guidance_scale=guidance)
        self._images[key], self._latents[key] = generation.image, generation.latent

    def fidelity(self, prompts: list[str], steps: int, guidance: float):
        from .quality.evaluate import measure

        if self._fidelity is None:
            generate = lambda prompt, seed: self.pipeline.generate(prompt, steps, seed, guidance_scale=guidance).image
            self._fidelity = measure(generate, prompts, [0], "torch fp32")
        return self._fidelity


def screen_decoders(candidates: list[ComponentCandidate], reference: Reference, settings: PlanSettings, steps: int,
                    guidance: float, progress: Progress) -> dict[str, dict]:
    """Step 3a: every quantized decoder alone, on the final latents of the fp32 torch pipeline
    (one decoder call per gate prompt): recipe -> its image PSNRs against torch's pictures and
    whether they clear the image gate. A configuration decodes a latent its own text encoder and
    UNet already moved off torch's; a decoder that misses the gate on torch's exact latent is not
    expected to meet it there, so its configurations are not evaluated (a decoder call each
    instead of a whole pipeline per configuration). Measured on mobilediffusion at 512 (README
    command 1's prompt, 2-core Zen 4-class EPYC): onnxruntime's static int8 decoder 28.9 dB alone on
    torch's latent, 27.4 dB after the int8 UNet (with the int8 or the fp32 text encoder), where the
    fp32 decoder gave 32.9 dB; LiteRT's dynamic int8 decoder 43.0 dB alone, 38.7 dB after the int8
    UNet. The screen took 2.7 s and 4.0 s; each configuration it spares runs a whole pipeline (about
    20 s on onnxruntime there). That int8 decoder was calibrated on the latents of 2-step runs;
    calibrated on those of 4-step runs, as the pipeline decodes (CalibrationSettings.decoder_steps),
    it reads 39.2 dB alone (2-core Xeon) and passes."""
    from .pipeline import image_to_uint8

    screened = {}
    for candidate in candidates:
        if candidate.component != "vae_decoder" or candidate.recipe == FP32 or candidate.error is not None:
            continue
        progress(f"decoder alone: {candidate.recipe} on the torch pipeline's latents")
        runner = open_candidate(candidate)
        psnrs = []
        for prompt, seed in settings.gate_prompts():
            latent = reference.latent(prompt, steps, seed, guidance).astype(np.float32)
            image = image_to_uint8(runner.run({"latent": latent})["image"])
            psnrs.append(reference.image_psnr(image, prompt, steps, seed, guidance))
        del runner
        passed = min(psnrs) >= settings.min_psnr_db
        screened[candidate.recipe] = {"image_psnr_db": psnrs, "passed": passed}
        if not passed:
            screened[candidate.recipe]["reason"] = (
                f"decoder {candidate.recipe} alone: image PSNR {min(psnrs):.1f} dB < {settings.min_psnr_db:g} dB "
                "on the torch pipeline's own latents")
    return screened


def evaluate(config: Configuration, reference: Reference, preset: Preset, settings: PlanSettings, steps: int,
             guidance: float, progress: Progress, pipeline: TextToImagePipeline | None = None,
             on_generation: OnGeneration | None = None) -> Evaluation:
    from .quality.evaluate import GateResult, measure
    from .quality.gate_margin import QUALITY_MARGIN
    from .quality.prompts import quality_prompts

    pipeline = pipeline or mixed_pipeline(config, preset)
    psnrs, seconds = [], []
    for prompt, seed in settings.gate_prompts():
        generation = pipeline.generate(prompt, steps, seed, guidance_scale=guidance)
        image = generation.image
        seconds.append(generation.seconds)
        if on_generation is not None:
            on_generation(config, prompt, seed, generation)
        psnrs.append(reference.image_psnr(image, prompt, steps, seed, guidance))
    if min(psnrs) < settings.min_psnr_db:
        return Evaluation(tuple(psnrs), None, False,
                          f"image PSNR {min(psnrs):.1f} dB < {settings.min_psnr_db:g} dB", tuple(seconds))
    if not reference.trained:
        return Evaluation(tuple(psnrs), None, True, "image gate passed (fidelity gate skipped: random weights)",
                          tuple(seconds))
    prompts = quality_prompts("held-out", settings.fidelity_prompts)
    progress(f"fidelity of {_name(config)} on {len(prompts)} held-out prompts")
    torch_report = reference.fidelity(prompts, steps, guidance)
    ours = measure(lambda prompt, seed: pipeline.generate(prompt, steps, seed, guidance_scale=guidance).image,
                   prompts, [0], _name(config))
    gate = GateResult(ours, torch_report, QUALITY_MARGIN)
    fidelity = {"fidelity": round(ours.fidelity, 4), "torch_fidelity": round(torch_report.fidelity, 4),
                "drop": round(gate.drop, 4), "margin": QUALITY_MARGIN, "failed_classes": gate.failed_classes,
                "passed": gate.passed}
    if not gate.passed:
        return Evaluation(tuple(psnrs), fidelity, False,
                          f"fidelity {ours.fidelity:.1%} vs torch {torch_report.fidelity:.1%}"
                          + (f" (classes: {', '.join(gate.failed_classes)})" if gate.failed_classes else ""),
                          tuple(seconds))
    return Evaluation(tuple(psnrs), fidelity, True, "image and fidelity gates passed", tuple(seconds))


def mixed_pipeline(config: Configuration, preset: Preset, open_runners: dict | None = None,
                   warm: bool = False, guidance: float = 1.0) -> TextToImagePipeline:
    """One pipeline over artifacts from several directories (one per component). `open_runners`
    ((component, recipe) -> Runner): runners other kept pipelines hold, reused instead of opening
    the artifact again. A runner is stateless between calls, and a second session of the same
    artifact doubles its memory: README command 1's LiteRT plan kept its choice and the fp32
    pipeline, both with the fp32 UNet, and peaked at 9.8 GB, over the job's 8 GB.

    `warm`: each runner opened here is called once on its export's reference input (a reused one
    was when it was opened), and with guidance the negative prompt is encoded, so the pipeline's
    first generate() is a warm call that step 4 can time. A first call pays allocation and weight
    packing: README command 1's LiteRT plan measured 28 s for its choice's first call and 24 s for
    a later one, 38 s against 29 s for fp32."""
    from .parity import load_reference

    open_runners = open_runners or {}
    runners = {}
    for candidate in config.parts:
        runner = open_runners.get((candidate.component, candidate.recipe))
        if runner is None:
            runner = open_candidate(candidate)
            if warm:
                runner.run(load_reference(Path(candidate.directory), candidate.entry)[0])
        runners[candidate.component] = runner
    pipeline = TextToImagePipeline(Networks(**runners), preset.unet.prediction_type)
    if warm and guidance != 1.0:
        pipeline.encode_negative("")
    return pipeline


def pipeline_runners(config: Configuration, pipeline: TextToImagePipeline) -> dict:
    return {(c.component, c.recipe): getattr(pipeline.networks, c.component) for c in config.parts}


def _name(config: Configuration) -> str:
    return " + ".join(f"{c.component}:{c.recipe}" for c in config.parts)


# ---- 4. the choice as one pipeline -----------------------------------------------------------

def time_pipelines(pipelines: dict[str, TextToImagePipeline], prompt: str, steps: int, seed: int, guidance: float,
                   runs: int, progress: Progress, first: dict[str, dict] | None = None) -> dict[str, dict]:
    """Median wall time of whole `generate` calls (text encoder, every UNet call, decoder), the
    pipelines called in alternation so background load weighs on all alike. The pipelines are
    warm (mixed_pipeline(warm=True)), so the first call's allocations are not in the numbers.
    `first` (name -> stage seconds): a warm call of this prompt and seed each already made (the
    image gate's), counted as run 1; the others are made here."""
    samples: dict[str, list[dict]] = {name: [first[name]] if first and name in first else [] for name in pipelines}
    for run in range(runs):
        for name, pipeline in pipelines.items():
            if len(samples[name]) > run:
                continue
            progress(f"end to end {run + 1}/{runs}: {name}")
            samples[name].append(pipeline.generate(prompt, steps, seed, guidance_scale=guidance).seconds)
    return {name: {f"{stage}_ms": round(statistics.median(call[stage] for call in calls) * 1e3, 2)
                   for stage in ("total", "text_encoder", "unet", "vae_decoder")}
            for name, calls in samples.items()}


def end_to_end(named: dict[str, Configuration], pipelines: dict[Configuration, TextToImagePipeline],
               settings: PlanSettings, steps: int, guidance: float, estimates: dict, progress: Progress,
               first: dict[Configuration, dict] | None = None) -> dict:
    """Step 4: the choice and fp32 (`named` {"choice": ..., "fp32": ...}) timed as whole
    pipelines, and measured / estimate. `first`: each configuration's warm image-gate call of the
    first gate prompt (run 1). `add_limit` puts the limit beside each total."""
    prompt, seed = settings.gate_prompts()[0]
    first = {name: first[config] for name, config in named.items() if first and config in first}
    timed = time_pipelines({name: pipelines[config] for name, config in named.items()}, prompt, steps, seed,
                           guidance, settings.pipeline_runs, progress, first)
    result = {"prompt": prompt, "seed": seed, "steps": steps, "guidance_scale": guidance,
              "runs": settings.pipeline_runs,
              "method": "median of warm generate() calls (every network called once on its reference input "
                        "when opened): the image gate's own call of this prompt, then alternating calls",
              "image_gate_call_counted": sorted(first)}
    for name, config in named.items():
        result[name] = dict(timed[name], components=config.recipes(), estimated_ms=estimates[config],
                            measured_over_estimate=round(timed[name]["total_ms"] / estimates[config], 3))
    fp32 = result.get("fp32", result["choice"])
    result["speedup_vs_fp32"] = round(fp32["total_ms"] / result["choice"]["total_ms"], 3)
    return result


def add_limit(measured: dict, named: dict[str, Configuration], gflops: dict[str, float], peak: dict,
              steps: int, guidance: bool) -> None:
    """limit_ms / total_over_limit (and the basis) beside each configuration's measured total."""
    limit = limit_of(gflops, peak, steps, guidance)
    for name, config in named.items():
        measured[name] |= limit(config, measured[name]["total_ms"])
    measured["machine_peak"] = peak


def limit_of(gflops: dict[str, float], peak: dict, steps: int, guidance: bool
             ) -> Callable[[Configuration, float], dict]:
    """limit_ms / total_over_limit of a configuration (benchmarks/limit.py): GFLOPs per call x
    calls, over the measured peak of each component's precision."""
    from md_export.benchmarks.limit import limit_basis, limit_fields

    def fields(config: Configuration, measured_ms: float) -> dict:
        calls = {"text_encoder": 1, "unet": steps * (2 if guidance else 1), "vae_decoder": 1}
        precisions = {c.component: (c.entry or {}).get("precision", c.recipe) for c in config.parts}
        # an alternative decoder's own GFLOPs (gflops["vae_decoder@PRESET"])
        keys = {c.component: (f"{c.component}@{alt_decoder_of(c.recipe)}" if alt_decoder_of(c.recipe) else c.component)
                for c in config.parts}
        work = {c: (gflops.get(keys[c]), n) for c, n in calls.items()}
        return limit_fields(limit_basis(work, precisions, peak), measured_ms)

    return fields


# ---- the whole plan ----------------------------------------------------------------------------

def make_plan(preset: Preset, out: str | Path, settings: PlanSettings, artifacts: str | Path | None = None,
              calibration: str | Path | None = None, overwrite: bool = False,
              progress: Progress | None = None, quantized: dict[str, Path] | None = None,
              component_ms: dict[tuple[str, str], float] | None = None, component_ms_alternated: bool = False,
              reference: Reference | None = None,
              peak: dict | None = None, gflops: dict[str, float] | None = None,
              on_generation: OnGeneration | None = None, peak_probe: Callable[[], dict] | None = None) -> dict:
    """The main job passes what it already has: `quantized` recipe directories, `component_ms`
    ((component, recipe) -> median ms from its benchmark; `component_ms_alternated`: there each
    component's rivals were called in alternation, so none is timed again), its torch `reference`, and the `peak`
    and per-component `gflops` its benchmark measured (the limit in step 4; without them, none).
    With `peak_probe`, the host is probed again right after the pipelines are timed and the limit
    holds them to the best of both probes (machine_peak.best_of_peaks)."""
    settings.check()
    progress = progress or (lambda message: None)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    steps = settings.steps if settings.steps is not None else preset.default_steps
    guidance = preset.guidance_scale
    artifacts_dir = Path(artifacts) if artifacts else None
    weight_seed = 0
    if artifacts_dir is not None:
        source = read_manifest(artifacts_dir).get("source", {})
        if source.get("kind") != "preset" or source.get("preset") != preset.name:
            raise BadArgumentError(f"{artifacts_dir} was not exported from preset {preset.name} "
                                   f"(its source: {source.get('preset') or source.get('kind')})")
        # the torch reference is the model the artifacts were exported from
        settings = replace(settings, checkpoint_dir=settings.checkpoint_dir or source.get("checkpoint_dir"))
        weight_seed = source.get("weight_seed", 0)
    candidates = prepare_candidates(preset, out, settings, artifacts_dir, Path(calibration) if calibration else None,
                                    overwrite, progress, quantized, steps=steps)
    from md_export.calibration.builders import CALIBRATION_MANIFEST

    used_calibration = Path(calibration) if calibration else out / "calibration"
    notes = (calibration_notes(used_calibration, steps, settings.gate_prompts())
             if quantized is None and (used_calibration / CALIBRATION_MANIFEST).is_file() else [])
    for note in notes:
        progress(f"calibration: {note}")
    if component_ms is not None and all((c.component, c.recipe) in component_ms for c in candidates if c.error is None):
        candidates = [replace(c, ms=component_ms[(c.component, c.recipe)]) if c.error is None else c for c in candidates]
        if component_ms_alternated:
            retimed, alternated = [], list(COMPONENTS)
            timing_source = "the caller's benchmark, each component's rivals called in alternation (median per call)"
        else:
            candidates, retimed = retime_close_rivals(candidates, settings.timing_runs, progress)
            alternated = retimed
            timing_source = "the caller's benchmark (median per call)" + (
                f"; {', '.join(retimed)} re-timed here in {settings.timing_runs} alternating runs (rivals within "
                f"{CLOSE_RIVALS:.0%} of each other there, or under {SHORT_CALL_MS:.0f} ms a call)" if retimed else "")
    else:
        candidates = time_candidates(candidates, settings.timing_runs, progress)
        timing_source = f"{settings.timing_runs} alternating runs"
        retimed = alternated = list(COMPONENTS)
    ranked = configurations(candidates, steps, guidance != 1.0)
    if not ranked:
        raise MdExportError("no runnable configuration: every candidate of some component failed")
    unet_entry = next(c.entry for c in candidates if c.component == "unet" and c.recipe == FP32)
    latent = next(i for i in unet_entry["inputs"] if i["name"] == "latent")
    resolution = latent["shape"][-1] * preset.vae.downsample_factor
    if reference is None:
        progress("fp32 torch reference")
        reference = Reference(preset, resolution, settings.checkpoint_dir, weight_seed)
    screen = screen_decoders(candidates, reference, settings, steps, guidance, progress)
    rows, choice = [], None
    baseline = next(c for _, c in ranked if all(p.recipe == FP32 for p in c.parts))
    estimates = {config: estimate for estimate, config in ranked}
    pipelines: dict[Configuration, TextToImagePipeline] = {}  # kept for step 4: the choice and fp32, warm
    kept_runners: dict[tuple[str, str], Runner] = {}  # theirs, shared with later pipelines
    first_calls: dict[Configuration, dict] = {}  # each evaluated configuration's warm call of gate prompt 0
    evaluated = 0
    for estimate, config in ranked:
        row = {"components": config.recipes(), "estimated_ms": estimate, "evaluated": False}
        decoder_screen = screen.get(config.parts[2].recipe, {})
        if config is not baseline and not decoder_screen.get("passed", True):
            row["screened_out"] = decoder_screen["reason"]
        elif (choice is None and evaluated < settings.max_evaluations) or config is baseline:
            evaluated += 1
            progress(f"evaluating {_name(config)} (estimated {estimate:.1f} ms)")
            pipeline = mixed_pipeline(config, preset, kept_runners, warm=settings.pipeline_runs > 0, guidance=guidance)
            result = evaluate(config, reference, preset, settings, steps, guidance, progress, pipeline, on_generation)
            if result.seconds:
                first_calls[config] = result.seconds[0]
            row.update(evaluated=True, image_psnr_db=list(result.image_psnr_db),
                       min_image_psnr_db=min(result.image_psnr_db),
                       mean_image_psnr_db=round(float(np.mean(result.image_psnr_db)), 2),
                       fidelity=result.fidelity, passed=result.passed, reason=result.reason)
            if result.passed and choice is None:
                choice = config
                row["chosen"] = True
            if config is baseline or config is choice:
                pipelines[config] = pipeline
                kept_runners.update(pipeline_runners(config, pipeline))
            del pipeline  # a rejected configuration's own sessions go now, not at the end of the plan
        rows.append(row)
    measured = None
    if choice is not None and settings.pipeline_runs > 0:
        named = {"choice": choice} | ({"fp32": baseline} if baseline is not choice else {})
        measured = end_to_end(named, pipelines, settings, steps, guidance, estimates, progress, first_calls)
        if peak and gflops:
            if peak_probe is not None:  # right beside the pipelines: the limit holds them to the best probe
                from md_export.benchmarks.machine_peak import best_of_peaks

                progress("machine peak, probed again right after the pipeline timing")
                peak = best_of_peaks([peak, peak_probe()])
            add_limit(measured, named, gflops, peak, steps, guidance != 1.0)
    pipelines.clear()
    kept_runners.clear()
    plan = {
        "preset": preset.name, "runtime": settings.runtime, "format": RUNTIME_FORMATS[settings.runtime],
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "choice": choice.recipes() if choice else None,
        "choice_estimated_ms": next((r["estimated_ms"] for r in rows if r.get("chosen")), None),
        "choice_measured_ms": measured["choice"]["total_ms"] if measured else None,
        "end_to_end": measured,
        "gates": {"min_image_psnr_db": settings.min_psnr_db, "image_prompts": len(settings.gate_prompts()),
                  "max_evaluations": settings.max_evaluations,
                  "fidelity": ({"prompts": settings.fidelity_prompts, "set": "held-out", "seeds": [0]}
                               if reference.trained else {"skipped": "random weights: fidelity of noise says nothing"})},
        "measurement": {"steps": steps, "guidance_scale": guidance,
                        "unet_calls_per_step": unet_calls_per_step(unet_entry, guidance != 1.0),
                        "resolution": resolution, "timing_runs": settings.timing_runs,
                        "component_timing": timing_source,
                        "alternated_components": [c for c in COMPONENTS if c in alternated],
                        "retimed_components": [c for c in COMPONENTS if c in retimed],
                        "estimate": "text + UNet calls per step x steps + decoder, per-call medians"},
        "weights": reference.sources,
        "alt_decoders": [{"preset": name, "weights": _alt_decoder_weights(out, name)} for name, _ in settings.alt_decoders],
        "calibration_notes": notes,
        "decoder_screen": screen,
        "component_candidates": [{"component": c.component, "recipe": c.recipe, "directory": c.directory,
                                  "file": c.entry["file"] if c.entry else None, "ms": c.ms, "error": c.error}
                                 for c in sorted(candidates, key=lambda c: (COMPONENTS.index(c.component),
                                                                            c.ms if c.ms is not None else math.inf))],
        "candidates": rows,
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_json_atomic(out / "plan.json", plan)
    write_text_atomic(out / "plan.md", markdown(plan))
    return plan


def _alt_decoder_weights(out: Path, name: str) -> str:
    """Where an alternative decoder's weights came from, as its export recorded it."""
    return read_manifest(out / "decoders" / name / "artifacts")["source"]["weights"]["vae_decoder"]


def end_to_end_markdown(measured: dict | None, heading: bool = True) -> list[str]:
    if not measured:
        return []
    lines = ["## The choice end to end (whole pipelines, measured)", ""] if heading else []
    lines += [f"\"{measured['prompt']}\", seed {measured['seed']}, {measured['steps']} steps, guidance "
              f"{measured['guidance_scale']}; {measured['method']}, {measured['runs']} runs each.", "",
              "| configuration | text ms | UNet ms | decoder ms | total ms | estimate ms | measured / estimate "
              "| limit ms | total / limit |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name in ("choice", "fp32"):
        row = measured.get(name)
        if row is None:
            continue
        label = f"{name}: " + ", ".join(row["components"].values())
        limit = "-" if row.get("limit_ms") is None else f"{row['limit_ms']:.1f}"
        ratio = "-" if row.get("total_over_limit") is None else f"{row['total_over_limit']:.2f}x"
        lines.append(f"| {label} | {row['text_encoder_ms']:.1f} | {row['unet_ms']:.1f} | {row['vae_decoder_ms']:.1f} | "
                     f"{row['total_ms']:.1f} | {row['estimated_ms']:.1f} | {row['measured_over_estimate']:.2f} | "
                     f"{limit} | {ratio} |")
    lines += ["", f"Speedup of the choice over fp32, end to end: **{measured['speedup_vs_fp32']:.2f}x**.", ""]
    peak = measured.get("machine_peak")
    if peak:
        readings = peak.get("readings", [peak])
        lines += [f"The limit's peaks: fp32 {peak['fp32_gflops']:.0f} GFLOP/s, int8 {peak['int8_gops']:.0f} GOP/s, the "
                  f"best of {len(readings)} probes in this run (int8 "
                  + ", ".join(f"{r['int8_gops']:.0f}" for r in readings) + "; fp32 "
                  + ", ".join(f"{r['fp32_gflops']:.0f}" for r in readings) + "), the last right after the pipelines.", ""]
    return lines


def markdown(plan: dict) -> str:
    m = plan["measurement"]
    choice = plan["choice"]
    timing = m.get("component_timing") or f"{m['timing_runs']} alternating runs"
    lines = [f"# Shipping plan: {plan['preset']} on {plan['runtime']}", ""]
    if choice:
        lines.append(f"Choice: **{', '.join(f'{k} {v}' for k, v in choice.items())}** "
                     f"(estimated {plan['choice_estimated_ms']:.1f} ms end to end"
                     + (f", measured {plan['choice_measured_ms']:.1f} ms" if plan.get("choice_measured_ms") else "")
                     + ").")
    else:
        lines.append("Choice: **none** (no configuration passed the gates).")
    fidelity = plan["gates"]["fidelity"]
    lines += ["", f"Gates: final image >= {plan['gates']['min_image_psnr_db']:g} dB PSNR against the fp32 torch "
              f"pipeline on {plan['gates']['image_prompts']} prompt(s); fidelity: "
              + (f"skipped ({fidelity['skipped']})" if "skipped" in fidelity
                 else f"within the quality margin of fp32 torch on {fidelity['prompts']} held-out prompts") + ".",
              f"Sampling: {m['steps']} DDIM steps, guidance {m['guidance_scale']}, {m['resolution']}x{m['resolution']}; "
              f"estimate = {m['estimate']} ({timing}; UNet calls per step {m['unet_calls_per_step']}).", ""]
    lines += [f"**Calibration:** {note}." for note in plan.get("calibration_notes", [])]
    lines += [""] if plan.get("calibration_notes") else []
    if plan.get("alt_decoders"):
        lines += ["Decoders: the preset's own; " + "; ".join(f"{d['preset']}'s, {d['weights']}"
                                                            for d in plan["alt_decoders"])
                  + " (candidates named PRESET/RECIPE).", ""]
    lines += end_to_end_markdown(plan.get("end_to_end"))
    lines += ["## Component candidates (median ms per call)", "", "| component | recipe | ms | note |",
              "| --- | --- | ---: | --- |"]
    for c in plan["component_candidates"]:
        ms = "" if c["ms"] is None else f"{c['ms']:.2f}"
        lines.append(f"| {c['component']} | {c['recipe']} | {ms} | {c['error'] or ''} |")
    lines += ["", "## Configurations (increasing estimate; evaluated until the first passes, plus fp32)", "",
              "| text encoder | UNet | decoder | est. ms | min / mean image PSNR dB | fidelity | verdict |",
              "| --- | --- | --- | ---: | --- | --- | --- |"]
    for row in plan["candidates"]:
        parts = row["components"]
        if row["evaluated"]:
            fid = row["fidelity"]
            fid_text = f"{fid['fidelity']:.1%} (torch {fid['torch_fidelity']:.1%})" if fid else "-"
            verdict = ("**chosen**: " if row.get("chosen") else ("passed: " if row["passed"] else "FAILED: ")) + row["reason"]
            psnr = f"{row['min_image_psnr_db']:.1f} / {row['mean_image_psnr_db']:.1f}"
        else:
            fid_text, verdict, psnr = "-", f"not evaluated: {row['screened_out']}" if row.get("screened_out") else "not evaluated", "-"
        lines.append(f"| {parts['text_encoder']} | {parts['unet']} | {parts['vae_decoder']} | {row['estimated_ms']:.1f} | "
                     f"{psnr} | {fid_text} | {verdict} |")
    return "\n".join(lines) + "\n"


