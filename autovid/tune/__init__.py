"""Ray Tune orchestration: trainables, the Tuner runner and the driver-side MLflow callback (the only ray users)."""
