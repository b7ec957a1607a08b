"""Export: the training-ready dataset folder (audio, manifests, splits, card) and its checks."""
