"""Training equilibrium reasoners (``eqsolve train``, ``eqsolve compare-grads``).

Modules, from the command down:

- :mod:`~eqsolve.training.run`: the run (``eqsolve train``): run folder, lock, signals, resume,
  distributed set-up, checkpoints, ``metrics.jsonl``, the curves figure;
- :mod:`~eqsolve.training.config`: :class:`~eqsolve.training.config.TrainConfig`, the validated
  schema of the ``train`` section;
- :mod:`~eqsolve.training.loop`: the :class:`~eqsolve.training.loop.Trainer` (model, AdamW, EMA,
  data draw, carried latent state);
- :mod:`~eqsolve.training.steps`: one optimisation step per gradient mode;
- :mod:`~eqsolve.training.losses`: the losses;
- :mod:`~eqsolve.training.data`: the puzzle pool and its draws;
- :mod:`~eqsolve.training.checkpoint`: training checkpoints (strict reads, RNG capture);
- :mod:`~eqsolve.training.eval`: evaluation during training;
- :mod:`~eqsolve.training.export` and :mod:`~eqsolve.training.measure`: ship a trained reasoner
  and measure it for its model card;
- :mod:`~eqsolve.training.compare_grads`: implicit vs unrolled training side by side.

The package imports nothing itself: ``import eqsolve.training.run`` (or another module) for what
you need.
"""
