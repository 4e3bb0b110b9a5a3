"""tomodata: the single-image tomography dataset (views, renderer, phantoms, store, data commands)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("single-image-tomography")  # the installed distribution's (pyproject.toml)
except PackageNotFoundError:  # a source tree on sys.path that was never installed
    __version__ = "0+unknown"
