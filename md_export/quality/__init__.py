"""Prompt fidelity without a learned judge (measured shapes, a digits classifier) and the
quality-parity gate between exported recipes and the fp32 torch model."""

from .evaluate import (GateResult, QualityGateFailure, QualityReport, SamplingSettings, artifact_generate, check_gate,
                       measure, picture_draws, torch_generate)
from .gate_margin import CLASS_NOISE_Z, QUALITY_MARGIN, class_margin, margin_summary
from .held_out import generate_held_out_prompts, held_out_prompts
from .prompts import PROMPT_SETS, prompt_set, quality_prompts
from .report import confusion_tables, grid_image, markdown_report, text_summary
from .scorer import fidelity, score_and_read, score_image

__all__ = ["CLASS_NOISE_Z", "GateResult", "PROMPT_SETS", "QUALITY_MARGIN", "QualityGateFailure", "QualityReport",
           "SamplingSettings", "artifact_generate", "check_gate", "class_margin", "confusion_tables", "fidelity",
           "generate_held_out_prompts", "grid_image", "held_out_prompts", "margin_summary", "markdown_report",
           "measure", "picture_draws", "prompt_set", "quality_prompts", "score_and_read", "score_image",
           "text_summary", "torch_generate"]
