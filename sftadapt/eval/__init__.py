"""Evaluation: sampling the target (sample), the protocols (protocol: paper, quick), scoring and intervals
(metrics), and the harness (evaluate)."""
