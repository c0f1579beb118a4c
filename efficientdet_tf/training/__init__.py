"""Training: the detection loss, learning-rate schedules, weight EMA and the distributed loop."""
