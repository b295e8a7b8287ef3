"""Prefect blocks: where deployed workers find their credentials (AWS Secrets Manager behind them).

`python -m blocks register` creates them; `blocks.resolve` is what the flows call at run time.
"""
