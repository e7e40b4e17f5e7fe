"""md_export: take MobileDiffusion-class text-to-image models from PyTorch to phones."""

__version__ = "0.1.0"
