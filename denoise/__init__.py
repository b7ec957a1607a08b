"""Denoise stage: low-pass and notch filtering of the speech slices."""
