"""Heat maps (pytorch-grad-cam) on the model's own preprocessing, mapped back to the original image, and their
agreement with radiologists' lesion masks."""
