"""The search, as data and files (no Ray): the ``space`` YAML -> an Optuna define-by-run function,
the Optuna ``study`` on disk, the ``trial_table`` and the ``experiment`` directory's files."""
