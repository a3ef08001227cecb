"""One package per modality; each imports only `biofuse` (never Prefect, Ray or the catalog)."""
