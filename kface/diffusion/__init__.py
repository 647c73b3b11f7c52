"""The class-conditional DDPM: UNet presets (``unet``), the guided pipeline (``pipeline``), the samplers and their
registry (``schedulers``), its training pieces (``training``), calibration checks (``calibration``) and filling a
samples folder from a pipeline (``generate``)."""

from .pipeline import ClassConditionalDDPMPipeline
from .schedulers import make_scheduler

__all__ = ["ClassConditionalDDPMPipeline", "make_scheduler"]
