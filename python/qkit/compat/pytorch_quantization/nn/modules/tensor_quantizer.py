"""``pytorch_quantization.nn.TensorQuantizer`` (SPEC §4.3, §4.4): descriptor-driven fake / real
quantization with calibration, on :mod:`..tensor_quant`, the compat calibrators and
:class:`..clip.Clip`.

Defaults are NVIDIA's: the descriptor's ``narrow_range=False``, so the default quantizer clamps
to [-128, 127] on the CPU (NVIDIA's CUDA kernel would give [-127, 127]; qkit follows the CPU).
The real-quant path calls ``tensor_quant`` without ``narrow_range``, i.e. narrow, as upstream.

Not supported: ``use_fb_fake_quant`` (ONNX export through torch's fake-quant ops), FP8
``num_bits=(4, 3)``, ``pre_quant_scale`` given as a non-broadcastable tensor is torch's error.
"""
import logging
import math

import torch
from torch import nn

from ... import calib
from ...tensor_quant import QuantDescriptor, fake_tensor_quant, tensor_quant
from ...utils import absmax_keep
from ..... import ops
from .clip import Clip

__all__ = ["TensorQuantizer"]


class TensorQuantizer(nn.Module):
    """Tensor quantizer module.

    Args:
        quant_desc: a QuantDescriptor (default: 8-bit per tensor, narrow_range False).
        disabled: bool, pass inputs through unchanged.
        if_quant: bool, quantize.
        if_clip: bool, clip (requires learn_amax).
        if_calib: bool, feed inputs to the calibrator.

    Raises:
        TypeError / ValueError from the descriptor; NotImplementedError for a histogram
        calibrator with an axis.
    """

    # Upstream switch to torch's fake-quant ops for ONNX export; not supported here.
    use_fb_fake_quant = False

    def __init__(self, quant_desc=QuantDescriptor(), disabled=False, if_quant=True,
                 if_clip=False, if_calib=False):
        super().__init__()
        self._num_bits = quant_desc.num_bits
        self._fake_quant = quant_desc.fake_quant
        self._axis = quant_desc.axis
        self._scale_amax = quant_desc.scale_amax
        self._learn_amax = quant_desc.learn_amax
        self._unsigned = quant_desc.unsigned
        self._narrow_range = quant_desc.narrow_range

        self._scale = None if not quant_desc.fake_quant else 1.
        self._disabled = disabled
        self._if_quant = if_quant
        self._if_clip = False
        self._if_calib = if_calib

        if quant_desc.amax is not None:
            self.register_buffer('_amax', torch.tensor(quant_desc.amax))

        # Clip module consumes a lot of memory, so only create it if learn_amax is True
        if self._learn_amax:
            init_amax = quant_desc.amax if quant_desc.amax is not None else 1.
            self.clip = Clip(-init_amax, init_amax, learn_min=True, learn_max=True)
            # It makes more sense to enable clip stage (which learns amax) if learn_amax is true
            self.enable_clip()
        if if_clip:
            self.enable_clip()

        if quant_desc.calib_method == "histogram":
            logging.info("Creating histogram calibrator")
            self._calibrator = calib.HistogramCalibrator(
                num_bits=self._num_bits, axis=self._axis, unsigned=self._unsigned)
        elif quant_desc.calib_method == "max":
            logging.info("Creating Max calibrator")
            self._calibrator = calib.MaxCalibrator(
                num_bits=self._num_bits, axis=self._axis, unsigned=self._unsigned)
        else:
            self._calibrator = None

    # pylint:disable=missing-docstring
    @property
    def num_bits(self):
        return self._num_bits

    @property
    def maxbound(self):
        return (1 << (self._num_bits - 1 + int(self._unsigned))) - 1

    @property
    def unsigned(self):
        return self._unsigned

    @property
    def narrow_range(self):
        return self._narrow_range

    @property
    def scale(self):
        if self._fake_quant:
            logging.error("Fake quantize mode doesn't use scale explicitly!")
        if self._scale is None:
            logging.critical("Accessing scale before quantizing any tensor!")
        return self._scale

    @property
    def pre_quant_scale(self):
        if not hasattr(self, "_pre_quant_scale"):
            return None
        return self._pre_quant_scale

    @pre_quant_scale.setter
    def pre_quant_scale(self, value):
        assert value is not None, "pre_quant_scale cannot be set to None."
        value = value if isinstance(value, torch.Tensor) else torch.tensor(value)
        if not hasattr(self, "_pre_quant_scale"):
            self.register_buffer("_pre_quant_scale", value.clone().detach())
        else:
            if self._pre_quant_scale.shape != value.shape:
                raise RuntimeError("Changing shape when setting pre_quant_scale is not allowed.")
            self._pre_quant_scale.data.copy_(value.clone().detach())

    @property
    def amax(self):
        if not hasattr(self, "_amax"):
            return None
        return self._amax

    @amax.setter
    def amax(self, value):
        if value is None:
            logging.error("Setting amax no None is meaningless.")
        else:
            if isinstance(value, torch.Tensor):
                logging.warning("amax setter is not designed to take tensor.")
            if not hasattr(self, "_amax"):
                self.register_buffer('_amax', torch.tensor(value))
            else:
                value = torch.tensor(value, device=self._amax.device)
                if self._amax.shape != value.shape:
                    raise TypeError("Changing shape when setting amax is not allowed.")
                self._amax.data.copy_(value.data)

    @property
    def step_size(self):
        """amax / maxbound (from the core's qparams with divisor quant_max)."""
        if not hasattr(self, "_amax"):
            logging.error("step_size is undefined under dynamic amax mode!")
            return None
        a = self._amax.detach().to(torch.float32).reshape(-1)
        step, _ = ops.choose_qparams(torch.zeros_like(a), a, bits=self._num_bits,
                                     is_signed=not self._unsigned, divisor="quant_max",
                                     degenerate="none")
        return step.reshape(self._amax.shape)

    @property
    def axis(self):
        return self._axis

    @axis.setter
    def axis(self, value):
        self._axis = value

    @property
    def fake_quant(self):
        return self._fake_quant

    @property
    def disabled(self):
        return self._disabled

    def disable(self):
        """Bypass the module."""
        self._disabled = True

    def enable(self):
        self._disabled = False

    def disable_clip(self):
        """Disable clip stage."""
        self._if_clip = False
        if hasattr(self, "clip"):
            self.clip.clip_value_min.requires_grad = False
            self.clip.clip_value_max.requires_grad = False

    def enable_clip(self):
        """Enable clip stage."""
        logging.warning("Enable `clip` stage for amax learning.")
        if not self._learn_amax:
            raise ValueError("learn_amax is False. Cannot enable clip.")
        self.clip.clip_value_min.requires_grad = True
        self.clip.clip_value_max.requires_grad = True
        self._if_clip = True

    def disable_calib(self):
        logging.warning("Disable {}".format(self._calibrator.__class__.__name__))
        self._if_calib = False

    def enable_calib(self):
        if self._calibrator is None:
            raise ValueError("Calibrator was not created, cannot enable calibration.")
        logging.info("Enable {}".format(self._calibrator.__class__.__name__))
        self._if_calib = True

    def disable_quant(self):
        logging.info("Disable {}".format(self.__class__.__name__))
        self._if_quant = False

    def enable_quant(self):
        logging.info("Enable {}".format(self.__class__.__name__))
        self._if_quant = True
    # pylint:enable=missing-docstring

    def load_calib_amax(self, *args, **kwargs):
        """Load the calibrator's ``compute_amax(*args, **kwargs)`` into the ``_amax`` buffer.
        ``strict=False`` stores NaN when the calibrator has seen nothing (the next quantized
        forward then raises ValueError in qkit, where upstream returns NaN)."""
        strict = kwargs.pop("strict", True)
        if getattr(self, '_calibrator', None) is None:
            raise RuntimeError("Calibrator not created.")
        calib_amax = self._calibrator.compute_amax(*args, **kwargs)
        if calib_amax is None:
            err_msg = ("Calibrator returned None. This usually happens when calibrator hasn't "
                       "seen any tensor.")
            if not strict:
                logging.warning(err_msg)
                logging.warning("Set amax to NaN!")
                calib_amax = torch.tensor(math.nan)
            else:
                raise RuntimeError(err_msg + " Passing 'strict=False' to `load_calib_amax()` "
                                   "will ignore the error.")
        logging.warning("Load calibrated amax, shape={}.".format(calib_amax.shape))
        if not hasattr(self, '_amax'):
            self.register_buffer('_amax', calib_amax.data)
        else:
            self._amax.copy_(calib_amax)

    def init_learn_amax(self):
        """Initialize the learned clip bounds from the calibrated amax (its max if per
        channel)."""
        if not self._learn_amax:
            raise RuntimeError("Called init_learn_amax with learn_amax=False.")
        logging.warning("Load amax as initial value for amax MinMax.")
        if self._amax.numel() != 1:
            logging.warning("Per channel learned amax not supported. Initializing with max(amax).")
            init_amax = torch.max(self._amax)
        else:
            init_amax = self._amax
        self.clip.clip_value_min.data.copy_(-init_amax.data.reshape(()))
        self.clip.clip_value_max.data.copy_(init_amax.data.reshape(()))

    def _get_amax(self, inputs):
        """The stored amax, or the dynamic per-batch ``max |x|`` over the non-kept axes."""
        if hasattr(self, '_amax'):
            amax = self._amax
        else:
            if self._axis is None:
                keep = []
            else:
                keep = list(self._axis) if isinstance(self._axis, (list, tuple)) else [self._axis]
            amax = absmax_keep(inputs, keep)
            if amax.numel() == 1:
                amax = amax.squeeze()
        if self._scale_amax is not None:
            amax = amax.detach() * self._scale_amax   # the user's factor (NVIDIA option)
        amax = amax.data
        if amax.dtype in (torch.float16, torch.bfloat16):
            amax = amax.float()
        return amax

    def _quant_forward(self, inputs):
        """Quantized forward pass."""
        if self._learn_amax:
            inputs = self.clip(inputs)
            amax = torch.max(-self.clip.clip_value_min, self.clip.clip_value_max).detach()
        else:
            amax = self._get_amax(inputs)
        if self._fake_quant:
            if TensorQuantizer.use_fb_fake_quant:
                raise NotImplementedError("use_fb_fake_quant is not supported by qkit")
            outputs = fake_tensor_quant(inputs, amax, self._num_bits, self._unsigned,
                                        self._narrow_range)
        else:
            outputs, self._scale = tensor_quant(inputs, amax, self._num_bits, self._unsigned)
        return outputs

    def forward(self, inputs):
        """Apply tensor_quant function to inputs.

        Args:
            inputs: A Tensor of type float32.

        Returns:
            outputs: A Tensor of type output_dtype
        """
        if hasattr(self, "_pre_quant_scale"):
            inputs = inputs * self._pre_quant_scale   # SmoothQuant's user factor
        if self._disabled:
            return inputs
        outputs = inputs
        if self._if_calib:
            if self._calibrator is None:
                raise RuntimeError("Calibrator was not created.")
            # Shape is only know when it sees the first tensor
            self._calibrator.collect(inputs)
        if self._if_clip:
            if not self._learn_amax:
                raise RuntimeError("Clip without learning amax is not implemented.")
            outputs = self.clip(inputs)
        if self._if_quant:
            outputs = self._quant_forward(inputs)
        return outputs

    def _short_amax(self, fmt='.4f'):
        if not hasattr(self, '_amax'):
            return 'dynamic'
        if self._amax.numel() == 1:
            return '{:{}}'.format(self._amax.item(), fmt)
        return '[{:{}}, {:{}}]({})'.format(self._amax.min().item(), fmt,
                                           self._amax.max().item(), fmt, self._amax.numel())

    def extra_repr(self):
        if self._disabled:
            return "disabled"
        s = "{}{}bit".format("unsigned " if self._unsigned else "", self._num_bits)
        s += " narrow" if (self._narrow_range) else ""
        s += " fake" if (self._fake_quant) else ""
        s += " axis={}".format(self._axis if self._axis is not None else " per-tensor")
        s += " amax={}".format(self._short_amax())
        s += " pre_quant_scale" if self.pre_quant_scale is not None else ""
        s += " learned" if (self._learn_amax) else ""
        s += " calibrator={}".format(self._calibrator.__class__.__name__) \
            if (self._calibrator is not None) else ""
        s += " scale={}".format(self._scale) if self._scale is not None else ""
        s += " quant" if (self._if_quant) else ""
        s += " clip" if (self._if_clip) else ""
        s += " calib" if (self._if_calib) else ""
        return s

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """Create ``_amax`` / ``_pre_quant_scale`` buffers that exist in the checkpoint only."""
        for name in ("_amax", "_pre_quant_scale"):
            key = prefix + name
            if key in state_dict and not hasattr(self, name):
                logging.warning("{}: No {} buffer to load {} into.".format(prefix[:-1], name, key))
                self.register_buffer(name, state_dict[key].clone().detach())
            elif key in state_dict and getattr(self, name).shape != state_dict[key].shape:
                raise RuntimeError(f"{key}: checkpoint shape {tuple(state_dict[key].shape)} "
                                   f"differs from {tuple(getattr(self, name).shape)}")
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
