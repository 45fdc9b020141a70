"""The auto-labelling recipe: pre-label (predict.py), review (review.py), Ground Truth job (job.py)."""
