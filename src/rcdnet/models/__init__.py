"""Models: RcdNet (EfficientNet + depthwise-separable conv + CBAM), a registry of timm baselines (``registry``),
and the one definition of the model input (``input``)."""
