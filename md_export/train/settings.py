"""What a training run does, as one frozen record (also written to OUT/train.json)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..errors import BadArgumentError

DATA_CHOICES = ("shapes", "digits", "both")


@dataclass(frozen=True)
class TrainSettings:
    data: str = "both"  # shapes, digits or both
    # 300 VAE + 2000 diffusion steps drew colours but not shapes (held-out fidelity 58.9%, shapes at
    # chance): the decoder could not draw corners (vae.py EDGE_WEIGHT) and the UNet had seen each
    # training caption about 10 times.
    steps: int = 8000  # text encoder + UNet optimiser steps
    vae_steps: int = 2500  # autoencoder optimiser steps (run first)
    batch_size: int = 32
    vae_batch_size: int = 16
    learning_rate: float = 1e-3
    vae_learning_rate: float = 3e-3
    warmup_steps: int = 20
    shapes_count: int = 6000  # rendered training scenes (digits: every training scan)
    digits_fraction: float = 0.3  # share of digits in a batch when data == "both"
    cfg_dropout: float = 0.1  # captions replaced by "" so the model also learns the unconditional
    ema_decay: float = 0.995  # the saved text encoder / UNet are an exponential moving average
    seed: int = 0
    split_seed: int = 0  # which captions / scans are held out (never trained on)
    save_every: int = 100  # resumable state every this many steps
    threads: int = 2
    # A checkpoint directory (four .safetensors) to start from instead of random weights: training
    # continues a shipped model with a fresh optimiser and schedule (a warm restart). With
    # vae_steps=0 its autoencoder is kept as it is, so the UNet keeps the latent space it knows.
    init_from: str | None = None
    # Input perturbation (Ning et al. 2023, "Input Perturbation Reduces Exposure Bias in Diffusion
    # Models"): the UNet's input is noised with noise + gamma * extra while its target keeps the
    # plain noise, so training sees inputs as imperfect as the sampler's own. 0 = plain training.
    input_perturbation: float = 0.0
    # Relative draw weight of a rendered scene per shape it holds ({"square": 2.0}: a scene with a
    # square is drawn twice as often as one without, two squares four times). The 83.8% weights
    # read 9 of 80 held-out squares right against 74 circles and 77 triangles (README, micro model).
    shape_weights: dict[str, float] = field(default_factory=dict)
    # Share of each batch whose timesteps are drawn from the noisiest 40% (t >= 600) instead of
    # all 1000: a shape's outline is decided at t >= 800 under 20-step DDIM (README, micro model), a
    # part uniform sampling trains 20% of the time. 0 = uniform.
    high_noise_fraction: float = 0.0

    def __post_init__(self) -> None:
        if self.data not in DATA_CHOICES:
            raise BadArgumentError(f"--data must be one of {', '.join(DATA_CHOICES)}, got {self.data!r}")
        for name in ("steps", "vae_steps", "shapes_count", "save_every"):
            if getattr(self, name) < 0:
                raise BadArgumentError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.batch_size < 1 or self.vae_batch_size < 1:
            raise BadArgumentError("batch sizes must be >= 1")
        if not 0.0 <= self.input_perturbation < 1.0:
            raise BadArgumentError(f"input_perturbation must be in [0, 1), got {self.input_perturbation}")
        if not 0.0 <= self.high_noise_fraction <= 1.0:
            raise BadArgumentError(f"high_noise_fraction must be in [0, 1], got {self.high_noise_fraction}")
        from ..data.shapes import CaptionError, check_shape_weights

        try:
            check_shape_weights(self.shape_weights)
        except CaptionError as error:
            raise BadArgumentError(str(error)) from None
        if not 0.0 <= self.cfg_dropout < 1.0 or not 0.0 <= self.digits_fraction <= 1.0:
            raise BadArgumentError("cfg_dropout must be in [0, 1) and digits_fraction in [0, 1]")

    def as_dict(self) -> dict:
        return asdict(self)
