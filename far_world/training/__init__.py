"""Training machinery shared by the train/ scripts: presets, schedules, EMA, DDP, logging, trainers."""
