"""Daily firewall metrics rollups: pure maths (rollup, days), reads (sources), writes (store).

`aggregate.aggregate_day` ties them together for one UTC day; the Prefect flow
`flows.metrics_aggregation` runs it per day under a Redis lock.
"""
