"""A Hydra sweeper on Optuna's ask-and-tell interface (``hydra/sweeper=optuna``), for current Optuna releases.

It replaces hydra-optuna-sweeper 1.3.0, which pins optuna 2.10 and through it SQLAlchemy 1 and an old
Alembic. The config shape is that plugin's (``hydra.sweeper.params`` with ``interval(...)``, ``choice(...)``,
``range(...)``, ``tag(log, interval(...))``; ``direction``, ``n_trials``, ``n_jobs``, ``storage``,
``study_name``, ``sampler``), so configs written for it keep working. Hydra finds this package through
the ``hydra_plugins`` namespace package; Optuna itself is imported only when a sweep starts, so the
plugin costs nothing without the ``sweep`` extra.
"""
