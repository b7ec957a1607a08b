"""Transcribe stage: Korean text for every slice by ASR."""
