"""Training: one loop (``loop.py``) for every method, on accelerate; ``run.train`` wires it up.

``tailored.train(...)`` is the public API *and* this package's name. Importing a submodule rebinds
``tailored.train`` to this module, which would shadow the function, so the module itself is made
callable and forwards to :func:`tailored.train.run.train`.
"""

import sys
import types
from typing import Any


class _CallableModule(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from tailored.train.run import train

        return train(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
