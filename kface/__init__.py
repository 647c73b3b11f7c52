"""kface: class-conditional diffusion on fine-grained identities, and honest identity metrics (RCA)."""

__version__ = "0.4.0.dev0"  # CHANGELOG.md: the [Unreleased] work after 0.3.0
