"""Calibrator package."""
