"""Shared training code for math-grpo: data, evaluation, weight sync and the tiny demo model."""

__version__ = "0.1.0"
