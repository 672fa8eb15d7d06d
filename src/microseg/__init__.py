"""microseg: plan zero-trust micro-segmentation and prove it before production."""
__version__ = "0.1.0"
