"""Adapters to outside training engines, above tasks and policies and below workflows: TRL
(`rlad.integrations.trl`, the `--engine trl` route) and verl (`rlad.integrations.verl`: parquet rows,
compute_score, the difficulty-weighted advantage estimator). They import their engine lazily."""
