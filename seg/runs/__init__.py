"""What reads and writes a run folder: its saved config, checkpoints, the model rebuilt from them, resume checks,
``init_from``, the result report and the provenance record."""
