"""Training of the micro reference model (VAE, then text encoder + UNet) on the offline data."""

from .run import train_micro
from .settings import DATA_CHOICES, TrainSettings

__all__ = ["DATA_CHOICES", "TrainSettings", "train_micro"]
