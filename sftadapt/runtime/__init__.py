"""The machine a stage runs on: model loading (models), the dtype policy (precision), offline mode (offline),
output folders the user owns (outdir), and what both trainers share around an HF Trainer (trainer_io)."""
