"""Horizon's process-global settings that change the numbers: ``QuantRoundMode``
(``horizon_plugin_pytorch.utils.global_quant_round_mode``) and the target ``March``
(``horizon_plugin_pytorch.march``; BERNOULLI restricts scales to powers of two).

``QuantRoundMode`` defaults to ``HALF_TO_EVEN`` (the plugin's code in the version read; the seed
document's ``floor(x / scale + 0.5)`` is ``BPU_ROUND``, and loading a FakeQuantize state dict
older than version 2 switches the global mode to ``BPU_ROUND``, as the plugin does).
"""
from enum import Enum

__all__ = ["March", "QuantRoundMode", "get_march", "set_march"]


class QuantRoundMode:
    BPU_ROUND = "bpu_round"
    HALF_TO_EVEN = "half_to_even"
    _mode = HALF_TO_EVEN

    @classmethod
    def set(cls, mode: str) -> None:
        if mode not in (cls.BPU_ROUND, cls.HALF_TO_EVEN):
            raise ValueError(f"QuantRoundMode.set: `mode`={mode!r} is not one of "
                             f"{(cls.BPU_ROUND, cls.HALF_TO_EVEN)}")
        cls._mode = mode

    @classmethod
    def get(cls) -> str:
        return cls._mode

    @classmethod
    def qkit_rounding(cls) -> str:
        """The core's rounding option for the current mode."""
        return "floor_add_half" if cls._mode == cls.BPU_ROUND else "half_to_even"


class March(str, Enum):
    BAYES = "bayes"
    BERNOULLI = "bernoulli"
    BERNOULLI2 = "bernoulli2"
    NASH = "nash"


_march = None


def set_march(march) -> None:
    global _march
    _march = None if march is None else March(march)


def get_march():
    return _march
