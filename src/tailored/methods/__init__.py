"""Fine-tuning methods as registered plug-ins behind one small contract (:class:`Method`).

Adding a method is one file that calls :func:`register` plus one row in the shared contract test.
The training loop only ever talks to the contract; it never branches on a method's name.
"""

from tailored.methods.base import Method, get_method, method_options, method_names, register

# Built-in methods register themselves on import.
from tailored.methods import lora as _lora  # noqa: F401,E402
from tailored.methods import full as _full, dora as _dora, qlora as _qlora, ia3 as _ia3  # noqa: F401,E402
from tailored.methods import adapter as _adapter, prompt_learning as _prompt_learning  # noqa: F401,E402
from tailored.methods import dpo as _dpo  # noqa: F401,E402

__all__ = ["Method", "register", "get_method", "method_names", "method_options"]
