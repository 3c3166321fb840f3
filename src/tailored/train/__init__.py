"""Training: one loop (``loop.py``) for every method, on accelerate; ``run.train`` wires it up."""
