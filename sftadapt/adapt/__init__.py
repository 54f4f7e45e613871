"""Adapting the SFT set to the target: Mind the Gap rewriting (rewrite, with its keep policy in policy) and DART
(mapper: RL training and synthesis; reward: the gate and the alignment reward)."""
