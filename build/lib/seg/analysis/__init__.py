"""Analysis tools: receptive fields (theoretical, gridding, effective) and sweep reports."""
