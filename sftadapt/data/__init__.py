"""Data in and out: the record schema (records), loaders of files and datasets (sources), the embedded synthetic
task (synthetic), resumable sharded output (store), every prompt and the one tokenisation (prompts), token budgets
checked before any engine call (budget)."""
