"""Export stage: the training-ready dataset folder (audio, manifests, splits, card)."""
