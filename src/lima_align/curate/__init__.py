"""Curation: raw community dumps and hand-written examples -> a small, high-quality, diverse dataset."""
