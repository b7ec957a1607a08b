"""Segment stage: find speech, music, noise and silence, label speech by gender, and cut
utterance-sized slices (engine: inaSpeechSegmenter)."""
