"""Fine-tuning the target on an adapted set: the stage (stage: TrainConfig, train, the sftadapt train command),
the losses (losses: nll, dft, is) and the tokenised rows (data)."""
