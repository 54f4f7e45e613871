"""GRPO plumbing (grpo: TRL's GRPOTrainer with our logging, resume and merge) and the direct-RL baseline
(direct_rl). Nothing here imports the SFT stage."""
