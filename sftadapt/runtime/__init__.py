"""The machine a stage runs on: model loading (models), the dtype policy (precision), malloc settings for CPU
training (memory), offline mode (offline), output folders the user owns (outdir), and what both trainers share
around an HF Trainer (trainer_io)."""
