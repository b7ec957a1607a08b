"""Export: the training-ready dataset (audio, manifests, transcripts, splits, card)."""
