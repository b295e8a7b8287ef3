"""The one-command demo: every worker, for real, on services started for the occasion.

`python -m avian_workers.demo` (or `make demo`) starts PostgreSQL, Redis and an IMAP server from
PyPI packages, moto for Secrets Manager and the Microsoft simulator, seeds demo tenants,
firewalls and alert mail, runs the three flows through Prefect and prints what they did.
docs/demo.md describes it in full.
"""
