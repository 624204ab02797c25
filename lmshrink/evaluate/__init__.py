"""Measuring models: calibration loss, perplexity, lm-eval tasks."""
