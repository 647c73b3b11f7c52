"""kface: class-conditional diffusion on fine-grained identities, and honest identity metrics (RCA)."""

__version__ = "0.1.0"
