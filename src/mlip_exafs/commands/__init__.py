"""CLI verbs of the pipeline stages, one module per stage (imported by mlip_exafs.cli)."""
