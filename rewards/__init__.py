"""r1_zero math grading and TRL reward functions for math-grpo."""
