"""Training: losses, schedules, the loop, checkpoints, distributed set-up, signals, logs."""
