"""Dataset passes: batches from folders, loaders and tensors, on the model's device, with one progress bar."""
