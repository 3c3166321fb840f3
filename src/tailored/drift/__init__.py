"""Drift: is the served model seeing what it was trained on? Statistics, verdict, and the way back to training."""
