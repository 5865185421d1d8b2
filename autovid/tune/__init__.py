"""Ray Tune orchestration: trainables, the Tuner runner and the driver-side MLflow callback (the only ray users)."""

import os

# Two of Tune's warnings that do not apply to autovid's trials, whose epochs take seconds to hours: a driver step
# over 0.5 s "may be a performance bottleneck" (an MLflow artifact upload at a trial's end takes that long), and
# an experiment snapshot forced by every checkpoint (autovid checkpoints every epoch on purpose, so that a resume
# loses at most one). Tune reads the first when ray.tune is imported, hence here, before any submodule imports it;
# a value the user has set wins.
os.environ.setdefault("TUNE_WARN_THRESHOLD_S", "5")
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
