"""Drop-in compatibility layers for five quantization toolkits (issue 5).

Each subpackage maps one system's public API (class and function names, argument names,
defaults, return types, error types) onto qkit's core options; no formula lives here. Switch a
port's imports and keep the numbers:

* ``qkit.compat.oneflow``              ``import oneflow as flow``  (``flow.nn.FakeQuantization``, ...)
* ``qkit.compat.megengine``            ``megengine.quantization`` (``observer``, ``fake_quant``, ``utils``)
* ``qkit.compat.horizon``              ``horizon_plugin_pytorch.quantization``
* ``qkit.compat.pytorch_quantization`` NVIDIA's ``pytorch_quantization``
* ``qkit.compat.distiller``            Intel Distiller's ``distiller.quantization``

Subpackages are imported lazily (``qkit.compat.oneflow`` is loaded on first access). The status
of every public name is in docs/compat.md.
"""
import importlib as _importlib

__all__ = ["distiller", "horizon", "megengine", "oneflow", "pytorch_quantization"]


def __getattr__(name):
    if name in __all__:
        module = _importlib.import_module(f"{__name__}.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
