"""Offline evaluation: metrics, rollouts against real episodes, baselines."""
