"""biofuse: identify people at a distance in archives of surveillance video."""

__version__ = "0.1.0"
