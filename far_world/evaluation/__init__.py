"""Offline evaluation: frame and video metrics, rollouts against real episodes, baselines, and the
protocols that train/evaluate.py runs (fidelity, action following, memory, extrapolation, the
FAR/TECO protocol); docs/evaluation.md says what each number means."""
