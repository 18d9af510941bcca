"""The search, as data and files (no Ray): the ``space`` YAML -> an Optuna define-by-run function,
the Optuna ``study`` on disk, the ``trial_table``, the ``experiment`` directory's files, and warm
starts from earlier studies (``warm_start``, ``earlier_studies``)."""
