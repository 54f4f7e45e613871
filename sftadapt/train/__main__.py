"""`python -m sftadapt.train ...` (what `accelerate launch -m sftadapt.train` runs on every rank) = the SFT stage's
own entry point in train/stage.py."""

import sys

from sftadapt.train.stage import _main

if __name__ == "__main__":
    _main(sys.argv[1:])
