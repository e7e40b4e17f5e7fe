"""Text -> tokens -> text encoder -> sampler -> VAE decoder -> image, over the `Runner` interface.

The pipeline never sees a torch module: any runner (torch, onnxruntime, LiteRT, Core ML) with the
component's input/output names plugs in without touching the sampler.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .runtimes.base import Runner
from .samplers import StepCallback, make_sampler
from .tokenizer import Tokenizer


@dataclass
class Networks:
    text_encoder: Runner
    unet: Runner
    vae_decoder: Runner


@dataclass
class Generation:
    image: np.ndarray  # (H, W, 3) uint8
    latent: np.ndarray  # final latent (1, C, h, w) float32
    seconds: dict[str, float] = field(default_factory=dict)  # stage -> wall time


def image_to_uint8(image: np.ndarray) -> np.ndarray:
    """(1,3,H,W) in [-1,1] -> (H,W,3) uint8."""
    pixels = np.clip((image[0].transpose(1, 2, 0) + 1.0) * 127.5, 0.0, 255.0)
    return np.round(pixels).astype(np.uint8)


def _spec(runner: Runner, name: str):
    for spec in runner.inputs:
        if spec.name == name:
            return spec
    raise ValueError(f"{runner.runtime} runner has no input {name!r}; it has {[s.name for s in runner.inputs]}")


class TextToImagePipeline:
    def __init__(self, networks: Networks, prediction_type: str, tokenizer: Tokenizer | None = None):
        self.networks = networks
        self.prediction_type = prediction_type
        self.tokenizer = tokenizer or Tokenizer()
        latent = _spec(networks.unet, "latent")
        self.latent_shape = (1,) + tuple(latent.shape[1:])
        # Exported UNets may have a fixed batch (1 or 2); torch's is free (-1).
        self.unet_batch = latent.shape[0] if latent.shape[0] > 0 else None
        # Negative prompts repeat across calls (almost always ""): encoded once per pipeline.
        self._negative_embeddings: dict[str, np.ndarray] = {}

    def encode_text(self, prompt: str) -> np.ndarray:
        ids = self.tokenizer(prompt)
        return self.networks.text_encoder.run({"input_ids": ids})["text_emb"].astype(np.float32)

    def encode_negative(self, prompt: str = "") -> np.ndarray:
        """The negative prompt's embedding, encoded on the first call and kept: a caller that
        times generate() calls this first so the one-off encoding is not in the first call."""
        return self._negative(prompt)

    def _negative(self, prompt: str) -> np.ndarray:
        if prompt not in self._negative_embeddings:
            self._negative_embeddings[prompt] = self.encode_text(prompt)
        return self._negative_embeddings[prompt]

    def _unet(self, latent: np.ndarray, timestep: np.ndarray, text_emb: np.ndarray) -> np.ndarray:
        chunk = self.unet_batch or latent.shape[0]
        outs = [
            self.networks.unet.run({"latent": latent[i:i + chunk], "timestep": timestep[i:i + chunk],
                                    "text_emb": text_emb[i:i + chunk]})["prediction"]
            for i in range(0, latent.shape[0], chunk)
        ]
        return np.concatenate(outs).astype(np.float32)

    def initial_noise(self, seed: int) -> np.ndarray:
        return np.random.default_rng(seed).standard_normal(self.latent_shape, dtype=np.float32)

    def sample_latent(self, prompt: str, steps: int, seed: int, guidance_scale: float = 7.5, sampler: str = "ddim",
                      negative_prompt: str = "", callback: StepCallback | None = None
                      ) -> tuple[np.ndarray, dict[str, float]]:
        """Text encoder and sampler, without the decoder: the final latent and the stages' seconds.
        Calibration needs only the latents (the decoder's input), not the picture."""
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        seconds: dict[str, float] = {}
        start = time.perf_counter()
        cond = self.encode_text(prompt)
        uncond = self._negative(negative_prompt) if guidance_scale != 1.0 else None
        seconds["text_encoder"] = time.perf_counter() - start

        start = time.perf_counter()
        latent = make_sampler(sampler, steps).sample(
            self._unet, self.initial_noise(seed), cond, uncond, guidance_scale, self.prediction_type, callback
        )
        seconds["unet"] = time.perf_counter() - start
        return latent, seconds

    def generate(self, prompt: str, steps: int, seed: int, guidance_scale: float = 7.5, sampler: str = "ddim",
                 negative_prompt: str = "", callback: StepCallback | None = None) -> Generation:
        latent, seconds = self.sample_latent(prompt, steps, seed, guidance_scale, sampler, negative_prompt, callback)
        start = time.perf_counter()
        image = self.networks.vae_decoder.run({"latent": latent})["image"]
        seconds["vae_decoder"] = time.perf_counter() - start
        seconds["total"] = sum(seconds.values())
        return Generation(image_to_uint8(image), latent, seconds)
