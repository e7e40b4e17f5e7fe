"""PyTorch reference implementations: configs, presets, the three networks, checkpoint io.

Imports nothing from md_export: the toolkit depends on the models, never the reverse.
"""

from .checkpoint import CheckpointError, load_component, load_text_encoder_from_hf, save_component
from .components import COMPONENTS, build_component, component_example_inputs
from .presets import ABLATION_STEPS, DEFAULT_PRESET, PRESETS, Preset, UnknownPresetError, get_preset, preset_names
from .text_encoder import CLIPTextEncoder, TextEncoderConfig
from .unet import MobileUNet
from .unet_config import UNetConfig
from .vae import VAEDecoder, VAEEncoder
from .vae_config import AutoencoderConfig, VAEConfig

__all__ = [
    "ABLATION_STEPS", "AutoencoderConfig", "CLIPTextEncoder", "COMPONENTS", "CheckpointError", "DEFAULT_PRESET",
    "MobileUNet", "PRESETS", "Preset", "TextEncoderConfig", "UNetConfig", "UnknownPresetError", "VAEConfig",
    "VAEDecoder", "VAEEncoder", "build_component", "component_example_inputs", "get_preset", "load_component",
    "load_text_encoder_from_hf", "preset_names", "save_component",
]
