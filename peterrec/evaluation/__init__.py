"""Evaluation, separate from training: metrics on ranks and probabilities, full-ranking evaluation, the
next-item protocol and the simple baselines every table shows beside the models."""
