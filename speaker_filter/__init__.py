"""Speaker filter stage: keep the slices whose Resemblyzer embedding is close to the target
speaker's."""
