"""PyTorch reference implementations: configs, presets, the three networks, checkpoint io.

Imports nothing from md_export: the toolkit depends on the models, never the reverse.
"""

from .checkpoint import CheckpointError, ConfigMismatchError, UnsupportedConfigError, load_component, save_component
from .checkpoint_layout import CheckpointSource, load_pretrained, open_checkpoint, preset_from_diffusers
from .components import COMPONENTS, build_component, component_example_inputs
from .convert_transformers import load_text_encoder_from_hf
from .preset_io import (PresetFileError, get_preset, is_preset_dir, load_preset_dir, preset_checkpoint_dir,
                        save_preset_dir)
from .presets import ABLATION_STEPS, DEFAULT_PRESET, PRESETS, Preset, UnknownPresetError, preset_names
from .text_encoder import CLIPTextEncoder, TextEncoderConfig
from .unet import MobileUNet
from .unet_config import UNetConfig
from .vae import VAEDecoder, VAEEncoder
from .vae_config import AutoencoderConfig, VAEConfig

__all__ = [
    "ABLATION_STEPS", "AutoencoderConfig", "CLIPTextEncoder", "COMPONENTS", "CheckpointError", "CheckpointSource",
    "ConfigMismatchError", "DEFAULT_PRESET", "MobileUNet", "PRESETS", "Preset", "PresetFileError", "TextEncoderConfig",
    "UNetConfig", "UnknownPresetError", "UnsupportedConfigError", "VAEConfig", "VAEDecoder", "VAEEncoder",
    "build_component", "component_example_inputs", "get_preset", "is_preset_dir", "load_component", "load_pretrained",
    "load_preset_dir", "load_text_encoder_from_hf", "open_checkpoint", "preset_checkpoint_dir", "preset_from_diffusers",
    "preset_names", "save_component", "save_preset_dir",
]
