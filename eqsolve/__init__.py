"""eqsolve: fixed points of neural maps, and training through them."""

__version__ = "0.1.0"
