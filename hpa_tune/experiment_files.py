"""Every file and folder name of an experiment directory (``STORAGE/NAME``), in one place.

Plain strings, no imports: every layer reads them from here (storage's driver claim as much as
the report or ``predict``), so none needs to import the module that writes a file to find it.

``run.json``          how the run was started (space, data, constants, budget, seed)
``space.yaml``        the search space as loaded (the resolved configuration beside the results)
``summary.csv``       one row per trial
``history.csv``       one row per trial and epoch (every scalar each trial reported)
``best.json``         the winning trial: sampled params, resolved config, metric
``trial_scores.csv``  every trial's best checkpoint scored on the holdout
``optuna.journal``    the Optuna study (journal storage; its name is ``study_name`` in run.json)
``asha_state.json``   ASHA's rungs, kept so that ``hpa-tune resume`` continues them
``tuner.pkl``         Ray Tune's saved search (written by Ray when the search starts)
``trial_<id>/``       one Ray Tune trial; its checkpoints hold ``model.pt``, ``training_state.pt``,
                      ``config.json`` and ``best_so_far.json``
``tensorboard/``      TensorBoard event files: one run per trial, and ``refit``
``refit/``            the refit model (``model.pt``, ``config.json``), its thresholds, holdout
                      metrics (``metrics.json``), history, predictions, ensemble and members
``report/``           the HTML report and the study table (``hpa-tune report``)
``.driver/``          the claim of the driver running it now (``storage.driver_claim``)
"""

# The experiment directory's own files.
RUN_FILE = "run.json"
SPACE_FILE = "space.yaml"
SUMMARY_FILE = "summary.csv"
HISTORY_FILE = "history.csv"
BEST_FILE = "best.json"
TRIAL_SCORES_FILE = "trial_scores.csv"
JOURNAL_FILE = "optuna.journal"
ASHA_STATE_FILE = "asha_state.json"
TUNER_FILE = "tuner.pkl"  # written by Ray Tune into the experiment directory when a search starts
CLAIM_DIR = ".driver"  # in the experiment directory (prefix on a bucket)

# Ray Tune's trial directories (``trial_dirname_creator`` in ``ray_layer.runner``) and what a
# trial leaves in them.
TRIAL_PREFIX = "trial_"
NONFINITE_MARKER = "nonfinite_loss.txt"
NOT_RETRYABLE_MARKER = "not_retryable.txt"

# A checkpoint (a trial's, or the refit model and each ensemble member).
MODEL_FILE = "model.pt"
STATE_FILE = "training_state.pt"
CONFIG_FILE = "config.json"
BEST_SO_FAR_FILE = "best_so_far.json"  # a trial's best score so far, for a restore

# TensorBoard: one folder, a run per trial and one for the refit.
TENSORBOARD_DIR = "tensorboard"
REFIT_RUN = "refit"

# The refit (``hpa-tune refit``), in REFIT_DIR.
REFIT_DIR = "refit"
REFIT_METRICS_FILE = "metrics.json"
THRESHOLDS_FILE = "thresholds.json"
INFO_FILE = "model_info.json"
REFIT_HISTORY_FILE = "history.csv"
PREDICTIONS_FILE = "predictions.npz"
ENSEMBLE_FILE = "ensemble.json"
MEMBERS_DIR = "members"

# The report (``hpa-tune report``), in REPORT_DIR unless --out says otherwise.
REPORT_DIR = "report"
REPORT_FILE = "report.html"
TABLE_MD = "study_table.md"
TABLE_CSV = "study_table.csv"
