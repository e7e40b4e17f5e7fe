"""Quantization recipes per format, the fallback search, and what the runtime really runs."""
