"""Seeing the data and the model: the data check, the evaluation report and training curves."""
