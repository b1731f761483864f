"""Training: one readable loop (fit.py), optimiser and schedule (optim.py), checkpoints, events."""
