"""Data: reading datasets (readers, sources, named), screening duplicates, splitting, preprocessing, augmentation."""
