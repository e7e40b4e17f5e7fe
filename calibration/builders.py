"""Calibration data recorded from real sampler runs, saved as safetensors shards plus a manifest.

    prompts.txt ──tokenizer──> text_encoder.safetensors   input_ids (N,77)
         │ DDIM with guidance, every UNet call recorded (uncond and cond rows, all timesteps)
         └──────────────────> unet.safetensors           latent (M,4,h,w), timestep (M,), text_emb (M,77,D)
    final latents (runs at decoder_steps, when set) + real photos (scikit-image) through the VAE encoder
                   ─────────> vae_decoder.safetensors    latent (K,4,h,w)

Every sample has batch 1 in the exported graphs, so guidance batches are split into rows.
Deterministic given the seed: prompt order, noise, and photo crops are all seeded.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable

import numpy as np

from md_export.errors import MdExportError

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "camera", "cat")  # skimage.data samples (offline)
CALIBRATION_MANIFEST = "calibration.json"
# calibration.json's "format_version": bumped when a reader of the old layout would misread the new.
CALIBRATION_FORMAT_VERSION = 1


class CalibrationError(MdExportError):
    """Calibration data that cannot be recorded or read (the CLI prints one line, exits non-zero)."""


def load_prompts(path: str | Path | None = None) -> list[str]:
    """The shipped prompt set, or a user's file in the same format (one prompt a line, # comments)."""
    if path is None:
        text = resources.files(__package__).joinpath("prompts.txt").read_text(encoding="utf-8")
    else:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CalibrationError(f"cannot read prompts file {path}: {exc}") from None
    prompts = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    if not prompts:
        raise CalibrationError(f"prompts file {path} holds no prompt")
    return prompts


def photo_batch(resolution: int, names: tuple[str, ...] = PHOTOS) -> np.ndarray:
    """Real photos as (P,3,R,R) float32 in [-1,1]: center square crop, resized."""
    from skimage import data
    from skimage.color import gray2rgb
    from skimage.transform import resize

    images = []
    for name in names:
        image = getattr(data, name)()
        if image.ndim == 2:
            image = gray2rgb(image)
        image = image[..., :3]
        side = min(image.shape[:2])
        top, left = (image.shape[0] - side) // 2, (image.shape[1] - side) // 2
        square = image[top:top + side, left:left + side]
        resized = resize(square, (resolution, resolution), anti_aliasing=True, preserve_range=True)
        images.append(resized.astype(np.float32).transpose(2, 0, 1) / 127.5 - 1.0)
    return np.stack(images)


@dataclass(frozen=True)
class CalibrationSettings:
    num_prompts: int = 16
    steps: int = 4
    seed: int = 0
    guidance_scale: float = 7.5
    resolution: int | None = None
    checkpoint_dir: str | None = None
    photos: int = len(PHOTOS)  # real photos through the VAE encoder (each a full encoder pass)
    prompts_file: str | None = None  # the domain's own prompts (None: calibration/prompts.txt)
    # Steps of the runs whose final latents calibrate the decoder (None: `steps`). The decoder's
    # int8 ranges must come from the latents the shipped pipeline decodes, and with random weights
    # their scale follows the step count (mobilediffusion at 512: std 2.0 after 2 DDIM steps, 4.5
    # after 4, 8.0 after 8). README command 1 calibrated its UNet on 2-step runs and its decoder on
    # their latents: onnxruntime's static int8 decoder read 28.9 dB on its 4-step pipeline's latent,
    # against 38.5-39.2 dB when calibrated on 1 to 4 latents of other 4-step runs.
    decoder_steps: int | None = None
    decoder_prompts: int = 1  # runs at `decoder_steps` when it differs from `steps` (UNet rows not recorded)
    held_out_prompts: tuple[str, ...] = ()  # never calibrated on: the prompts a quality gate will judge


# Photo latents are decoder inputs only when the encoder maps into the latent space the UNet
# samples in. Measured std ratio (sampler latents / photo latents), 4 prompts x 4 steps:
# trained mobilediffusion-micro weights 1.5-1.8; random-weight mobilediffusion-tiny about 100
# (the random encoder's latents are 0.045 wide). Mixed into one calibration set, such latents
# squeezed the decoder's int8 ranges: 18-21 dB on them against 36-40 dB on sampler latents.
MAX_LATENT_STD_RATIO = 10.0

# Run i's noise seed is CALIBRATION_SEED_OFFSET + seed + i, so calibration never starts from the noise of a
# picture drawn with a small seed. README command 1 drew its gate picture with seed 0 and calibrated
# run 0 from seed 0 too: with random weights the prompt hardly moves a trajectory, and that run's
# final latent correlated 1.000 with the gate's, the test input inside the calibration set.
CALIBRATION_SEED_OFFSET = 1 << 20


def noise_seed(seed: int, index: int) -> int:
    return CALIBRATION_SEED_OFFSET + seed + index


def photo_latents_match(sampler_latents: np.ndarray, photo_latents: np.ndarray) -> tuple[bool, dict]:
    """Whether the encoded photos are in the sampler's latent distribution (by std ratio)."""
    ratio = float(sampler_latents.std() / max(float(photo_latents.std()), 1e-12))
    used = 1.0 / MAX_LATENT_STD_RATIO <= ratio <= MAX_LATENT_STD_RATIO
    note = {"used_for_vae_decoder": used, "sampler_over_photo_std": round(ratio, 3)}
    if not used:
        note["reason"] = (f"photo latents left out of the decoder's calibration: their std is {ratio:.1f}x off the "
                          f"sampler's (limit {MAX_LATENT_STD_RATIO:g}x), so the VAE encoder does not map into "
                          "the UNet's latent space (random or mismatched weights)")
    return used, note


def build_calibration(preset, out: str | Path, settings: CalibrationSettings,
                      progress: Callable[[int, int, str], None] | None = None, *, overwrite: bool = False,
                      networks: tuple | None = None) -> dict:
    """Run the fp32 torch pipeline over `num_prompts` prompts and record every network input.

    `networks`: (Networks, sources) that torch_networks already built for this preset, resolution
    and checkpoint (the main job's torch reference), used instead of building them again.

    `out` must be absent or an empty directory; a directory holding anything is replaced only with
    `overwrite`, and only once the new data is complete (staged beside it, then renamed)."""
    from md_export.export.manifest import check_output_dir
    from md_export.pipeline import TextToImagePipeline
    from md_export.torch_networks import load_module, torch_networks
    from md_export.models import component_example_inputs

    if settings.num_prompts < 1 or settings.steps < 1:
        raise CalibrationError("--num-prompts and --steps must be at least 1")
    decoder_steps = settings.decoder_steps or settings.steps
    if settings.decoder_steps is not None and settings.decoder_steps < 1:
        raise CalibrationError(f"--decoder-steps must be at least 1, got {settings.decoder_steps}")
    decoder_runs = settings.decoder_prompts if decoder_steps != settings.steps else 0
    if decoder_steps != settings.steps and decoder_runs < 1:
        raise CalibrationError(f"decoder_prompts must be at least 1 with --decoder-steps, got {settings.decoder_prompts}")
    if settings.resolution is not None:
        factor = preset.vae.downsample_factor * preset.unet.downsample_factor
        if settings.resolution < 1 or settings.resolution % factor:
            raise CalibrationError(f"--resolution must be a positive multiple of {factor} for preset {preset.name}, "
                                   f"got {settings.resolution}")
    out = Path(out)
    check_output_dir(out, must_be_empty=not overwrite)  # before the sampling, not after it
    held_out = set(settings.held_out_prompts)
    prompts = [p for p in load_prompts(settings.prompts_file) if p not in held_out]
    wanted = settings.num_prompts + decoder_runs
    if wanted > len(prompts):
        raise CalibrationError(f"{wanted} calibration prompts wanted (--num-prompts {settings.num_prompts}"
                               + (f" + {decoder_runs} for the decoder" if decoder_runs else "")
                               + f") > the {len(prompts)} prompts in the set"
                               + (f" without the {len(held_out)} held out" if held_out else ""))
    resolution = settings.resolution or preset.resolution
    rng = np.random.default_rng(settings.seed)
    picked = rng.choice(len(prompts), wanted, replace=False)
    chosen = [prompts[i] for i in sorted(picked[:settings.num_prompts])]
    decoder_chosen = [prompts[i] for i in sorted(picked[settings.num_prompts:])]
    progress = progress or (lambda done, total, message: None)
    total = wanted + 1

    networks, sources = networks or torch_networks(preset, resolution, settings.checkpoint_dir)
    pipeline = TextToImagePipeline(networks, preset.unet.prediction_type)
    recorded = {"latent": [], "timestep": [], "text_emb": []}
    unet_runner = networks.unet
    original_run = unet_runner.run

    def recording_run(feeds):
        for name in recorded:
            recorded[name].extend(np.split(feeds[name], feeds[name].shape[0]))
        return original_run(feeds)

    unet_runner.run = recording_run
    final_latents = []
    try:
        for index, prompt in enumerate(chosen):
            progress(index, total, f"sampling: {prompt[:48]}")
            # no decoder pass: its calibration input is the final latent, not the picture
            latent, _ = pipeline.sample_latent(prompt, settings.steps, noise_seed(settings.seed, index),
                                               settings.guidance_scale)
            final_latents.append(latent)
    finally:
        unet_runner.run = original_run
    if decoder_runs:
        final_latents = []
        for offset, prompt in enumerate(decoder_chosen):
            index = settings.num_prompts + offset
            progress(index, total, f"sampling {decoder_steps} steps for the decoder: {prompt[:32]}")
            latent, _ = pipeline.sample_latent(prompt, decoder_steps, noise_seed(settings.seed, index),
                                               settings.guidance_scale)
            final_latents.append(latent)

    encoder = load_module(preset, "vae_encoder", settings.checkpoint_dir, 0)
    if encoder.source.startswith("random"):
        # A random encoder is no autoencoder half: its latents are not the space the UNet samples
        # in, whatever the other weights (measured: 100x narrower than the sampler's on
        # mobilediffusion-tiny). Encoding the photos only to leave them out cost 22.8 s of
        # README command 1's calibration (2 photos at 512, 2-core EPYC).
        photos_used = False
        photo_note = {"used_for_vae_decoder": False,
                      "reason": f"photo latents left out of the decoder's calibration: the VAE encoder has "
                                f"{encoder.source}, so it does not map into the UNet's latent space; not encoded"}
    else:
        progress(wanted, total, "encoding real photos")
        import torch

        with torch.inference_mode():
            photo_latents = encoder.module(torch.from_numpy(photo_batch(resolution, PHOTOS[: settings.photos]))).numpy()
        photos_used, photo_note = photo_latents_match(np.concatenate(final_latents), photo_latents)
    if not photos_used:
        progress(wanted, total, photo_note["reason"])
    shards = {
        "text_encoder": {"input_ids": pipeline.tokenizer(chosen + decoder_chosen + [""])},
        "unet": {name: np.concatenate(values).astype(np.float32) for name, values in recorded.items()},
        "vae_decoder": {"latent": np.concatenate(final_latents + ([photo_latents] if photos_used else []))
                        .astype(np.float32)},
    }
    expected_latent = component_example_inputs(preset, "vae_decoder", resolution)[0].shape[1:]
    assert shards["vae_decoder"]["latent"].shape[1:] == tuple(expected_latent)

    manifest = {
        "preset": preset.name, "resolution": resolution, "num_prompts": settings.num_prompts,
        "steps": settings.steps, "seed": settings.seed, "guidance_scale": settings.guidance_scale,
        "weights": sources, "prompts_file": settings.prompts_file, "prompts": chosen,
        "photos": list(PHOTOS[: settings.photos]), "photo_latents": photo_note,
        "noise_seeds": [noise_seed(settings.seed, i) for i in range(wanted)],
        "decoder_steps": decoder_steps, "decoder_prompts": decoder_chosen or chosen,
        "held_out_prompts": len(held_out),
    }
    manifest = write_calibration(out, shards, manifest, overwrite=overwrite)
    progress(total, total, "done")
    return manifest


def write_calibration(out: str | Path, shards: dict[str, dict[str, np.ndarray]], manifest: dict, *,
                      overwrite: bool = False) -> dict:
    """Write a calibration directory: one `<component>.safetensors` per component (input name ->
    (rows, ...) array) and calibration.json (`manifest` plus format_version, samples and files).
    Staged beside `out`, then renamed; a non-empty `out` is replaced only with `overwrite`."""
    from safetensors.numpy import save_file

    from md_export.export.manifest import check_output_dir, make_output_dir, remove_created_dir

    out = Path(out)
    check_output_dir(out, must_be_empty=not overwrite)
    manifest = {"format_version": CALIBRATION_FORMAT_VERSION, **manifest,
                "samples": {component: int(next(iter(arrays.values())).shape[0]) for component, arrays in shards.items()},
                "files": {component: f"{component}.safetensors" for component in shards}}
    created = make_output_dir(out.parent)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.staging-"))
    try:
        for component, arrays in shards.items():
            save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(staging / f"{component}.safetensors"))
        (staging / CALIBRATION_MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        _move_into_place(staging, out, overwrite)
    except BaseException:
        remove_created_dir(created)
        raise
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return manifest


def _move_into_place(staging: Path, out: Path, overwrite: bool) -> None:
    """Rename the finished `staging` directory to `out`. An existing non-empty `out` is replaced only
    with `overwrite`: it is moved aside first and deleted only after the rename succeeded."""
    from md_export.errors import OutputError
    from md_export.export.manifest import replace_path

    if not (out.is_dir() and any(out.iterdir())):
        os.replace(staging, out)  # absent or an empty directory: one atomic rename
        return
    if not overwrite:  # filled while we were sampling: never replace what is not ours to replace
        raise OutputError(f"output directory {out} is not empty; pass --overwrite to replace it")
    replace_path(staging, out)  # the old `out` is moved aside, and put back if the rename fails


def read_calibration_manifest(directory: str | Path) -> dict:
    """calibration.json of a calibration directory (what `md-export calibrate` recorded, and how)."""
    directory = Path(directory)
    manifest_path = directory / CALIBRATION_MANIFEST
    if not manifest_path.is_file():
        raise CalibrationError(f"{directory} has no {CALIBRATION_MANIFEST}: not a calibration directory "
                               "(make one with md-export calibrate)")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CalibrationError(f"cannot read {manifest_path}: {exc}") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise CalibrationError(f"{manifest_path} has no 'files' mapping: not a calibration manifest")
    # Folders written before the format was versioned carry no "format_version": they are version 1.
    version = manifest.get("format_version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CalibrationError(f"{manifest_path} has format_version {version!r}: not a calibration format version")
    if version > CALIBRATION_FORMAT_VERSION:
        raise CalibrationError(f"{manifest_path} has format_version {version}, newer than the "
                               f"{CALIBRATION_FORMAT_VERSION} this md-export reads: upgrade md-export, or "
                               "record the calibration again with this version")
    return manifest


def load_calibration(directory: str | Path, component: str) -> dict[str, np.ndarray]:
    """The recorded inputs of one component: name -> (S, ...) array, one row per sample."""
    from safetensors.numpy import load_file

    directory = Path(directory)
    manifest = read_calibration_manifest(directory)
    if component not in manifest["files"]:
        raise CalibrationError(f"calibration {directory} has no data for {component}")
    return load_file(str(directory / manifest["files"][component]))


def calibration_feeds(directory: str | Path, component: str, input_shapes: dict[str, list[int]],
                      limit: int | None = None) -> list[dict[str, np.ndarray]]:
    """Per-sample feeds (batch 1) checked against an artifact's input shapes."""
    arrays = load_calibration(directory, component)
    for name, shape in input_shapes.items():
        if name not in arrays:
            raise CalibrationError(f"calibration for {component} has no input {name!r} (has {sorted(arrays)})")
        if list(arrays[name].shape[1:]) != list(shape[1:]):
            raise CalibrationError(f"calibration {component}.{name} rows are {list(arrays[name].shape[1:])}, "
                                   f"the artifact takes {list(shape[1:])} (another resolution or preset?)")
    # one feed per `batch` rows: the artifact's batch axis (1 for every preset export)
    batches = {int(shape[0]) for shape in input_shapes.values() if len(shape) >= 1}
    batch = max(batches.pop(), 1) if len(batches) == 1 else 1
    count = next(iter(arrays.values())).shape[0] // batch
    count = count if limit is None else min(count, limit)
    return [{name: arrays[name][i * batch:(i + 1) * batch] for name in input_shapes} for i in range(count)]
