"""Sampling: the DDIM loop with its z0 hook, and the multi-view pipelines."""

from .ddim import Z0Hook, ddim_sample, image_scheduler, text_scheduler, z0_and_eps
from .pipeline import I2MVPipeline, MultiViewPipelineOutput, T2MVPipeline

__all__ = [
    "I2MVPipeline",
    "MultiViewPipelineOutput",
    "T2MVPipeline",
    "Z0Hook",
    "ddim_sample",
    "image_scheduler",
    "text_scheduler",
    "z0_and_eps",
]
