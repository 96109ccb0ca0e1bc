"""Online A/B experiments between model versions: definitions, registry, assignment, attribution tokens,
the durable event log and the report. Pure Python + DuckDB; app.http wires it into the routes."""
