"""Config-driven training framework for face-image models."""

__version__ = "0.1.0"
