"""diffembed: text embeddings from diffusion and autoregressive language models."""

__version__ = "0.1.0"
