"""lima-align: align a pretrained language model with a small, curated dataset (the LIMA workflow)."""

__version__ = "0.1.0"
