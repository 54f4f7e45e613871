"""sftadapt: adapt a fixed SFT dataset to the model being trained on it, then fine-tune and evaluate.

Stages (each a module and a CLI command): rewrite (Mind the Gap), map (DART), train (nll | dft | is),
eval, report; `run` chains them. See README.md and docs/.
"""

__version__ = "0.1.0"
SCHEMA_VERSION = 1
