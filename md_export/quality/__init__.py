"""Prompt fidelity without a learned judge (measured shapes, a digits classifier) and the
quality-parity gate between exported recipes and the fp32 torch model."""

from .evaluate import (QUALITY_MARGIN, GateResult, QualityGateFailure, QualityReport, SamplingSettings,
                       artifact_generate, check_gate, measure, picture_draws, torch_generate)
from .held_out import generate_held_out_prompts, held_out_prompts
from .prompts import PROMPT_SETS, prompt_set, quality_prompts
from .scorer import fidelity, score_image

__all__ = ["GateResult", "PROMPT_SETS", "QUALITY_MARGIN", "QualityGateFailure", "QualityReport", "SamplingSettings",
           "artifact_generate", "check_gate", "fidelity", "generate_held_out_prompts", "held_out_prompts", "measure",
           "picture_draws", "prompt_set", "quality_prompts", "score_image", "torch_generate"]
