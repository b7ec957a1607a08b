"""Export: the training-ready dataset (audio, manifests, splits, texts, card, verification)."""
