"""roadwork_assets: the Dagster orchestration of roadwork_ml. Thin asset bodies, typed metadata."""
