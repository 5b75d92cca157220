"""glance: train two Glance LoRAs on one image with SimpleTuner, sample them with diffusers."""

__version__ = "0.1.0"
