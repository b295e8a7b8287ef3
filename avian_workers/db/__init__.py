"""PostgreSQL: models, engine, bulk upserts, migrations and schema checks."""
