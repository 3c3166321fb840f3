"""Choose the lever by measurement: ``compare()`` scores zero-shot, few-shot, RAG and fine-tuned runs on one
held-out set; ``advise()`` inspects the data cheaply and recommends one, with the command that confirms it.

Layer: with ``export`` (it uses eval's metrics and generation, train and the estimate); only serve/cli use it.
"""

from tailored.compare.advise import advise
from tailored.compare.run import STRATEGIES, compare

__all__ = ["STRATEGIES", "advise", "compare"]
