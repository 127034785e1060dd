"""Training, evaluation and prediction loops (lessons 10-12)."""
