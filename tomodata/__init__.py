"""tomodata: the single-image tomography dataset (views, renderer, phantoms, store, CLI)."""

__version__ = "0.1.0"
