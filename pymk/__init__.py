"""pymk: People You May Know recommendations on a social graph."""

__version__ = "0.1.0"
