"""Evaluation: the shared protocol (split, users, metrics), baselines and reports."""
