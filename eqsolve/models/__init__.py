"""Models: the Equilibrium Reasoner (EqR) as a fixed-point map, and its checkpoints."""

from eqsolve.models.eqr import MIXERS, EqR, EqRConfig

__all__ = ["MIXERS", "EqR", "EqRConfig"]
