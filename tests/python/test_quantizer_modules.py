"""qkit.nn.FakeQuantize over the core observers (fused path, toggles, PyTorch's own
FakeQuantize as the reference where the options coincide) and qkit.nn.TensorQuantizer (NVIDIA
pytorch-quantization's TensorQuantizer, plain-torch reference of its fake quant from SPEC.md
4.x: scale = 127 / amax, round half to even, clamp, divide)."""
import copy

import pytest
import torch
import torch.ao.quantization as tq

import qkit
import reference_observers as ref


def _same(a, b):
    torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)


TORCH_OPTS = dict(scale_mode="multiply_reciprocal", nan_mode="to_quant_min")


@pytest.mark.parametrize("per_channel", [False, True])
def test_fake_quantize_matches_torch_fake_quantize(per_channel, gen):
    if per_channel:
        kw = dict(observer=qkit.nn.MovingAverageMinMaxObserver, dtype=torch.qint8,
                  qscheme=torch.per_channel_symmetric, ch_axis=1)
        t = tq.FakeQuantize(observer=tq.MovingAveragePerChannelMinMaxObserver, quant_min=-128,
                            quant_max=127, dtype=torch.qint8,
                            qscheme=torch.per_channel_symmetric, ch_axis=1)
    else:
        kw = dict(dtype=torch.quint8, qscheme=torch.per_tensor_affine)
        t = tq.FakeQuantize(quant_min=0, quant_max=255)  # MovingAverage, quint8, affine
    q = qkit.nn.FakeQuantize(**kw, **TORCH_OPTS)
    for i in range(4):
        x = (torch.randn(8, 6, generator=gen) * (1 + i)).requires_grad_(True)
        xt = x.detach().clone().requires_grad_(True)
        dy = torch.randn(8, 6, generator=gen)
        yq, yt = q(x), t(xt)
        _same(yq, yt)
        _same(q.scale, t.scale)
        assert torch.equal(q.zero_point, t.zero_point.to(torch.int32))
        yq.backward(dy)
        yt.backward(dy)
        _same(x.grad, xt.grad)


@pytest.mark.parametrize("observer", [qkit.nn.MinMaxObserver, qkit.nn.MovingAverageMinMaxObserver,
                                      qkit.nn.HistogramObserver])
def test_fused_path_equals_observe_then_quantize(observer, gen):
    q = qkit.nn.FakeQuantize(observer=observer)
    o = observer(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric)
    for _ in range(3):
        x = torch.randn(200, generator=gen)
        y = q(x)
        o(x)
        s, z = o.calculate_qparams()
        _same(q.scale, s)
        _same(y, qkit.fake_quantize(x, s, z))
        for k, v in o.state_dict().items():
            _same(q.activation_post_process.state_dict()[k], v)


def test_fake_quantize_with_a_torch_observer(gen):
    q = qkit.nn.FakeQuantize(observer=tq.MinMaxObserver, quant_min=0, quant_max=255,
                             dtype=torch.quint8, qscheme=torch.per_tensor_affine)
    o = tq.MinMaxObserver(quant_min=0, quant_max=255, dtype=torch.quint8)
    x = torch.randn(100, generator=gen)
    y = q(x)
    o(x)
    s, z = o.calculate_qparams()
    _same(q.scale, s)
    _same(y, qkit.fake_quantize(x, s, z, quant_min=0, quant_max=255))


def test_fake_quantize_toggles_set_qparams_and_state_dict(gen):
    q = qkit.nn.FakeQuantize(observer=qkit.nn.MovingAverageMinMaxObserver.with_args(
        averaging_constant=0.5), qscheme=torch.per_channel_affine, dtype=torch.quint8,
        ch_axis=0, channel_len=3)
    assert q.scale.shape == (3,)
    x = torch.randn(3, 10, generator=gen)
    q(x)
    sd = q.state_dict()
    fresh = qkit.nn.FakeQuantize(observer=qkit.nn.MovingAverageMinMaxObserver.with_args(
        averaging_constant=0.5), qscheme=torch.per_channel_affine, dtype=torch.quint8,
        ch_axis=0)
    fresh.load_state_dict(sd)
    x2 = torch.randn(3, 10, generator=gen)
    _same(fresh(x2), q(x2))
    q.disable_observer()
    before = copy.deepcopy(q.state_dict())
    q(x * 10)
    for k, v in q.state_dict().items():
        _same(v, before[k])
    q.set_qparams([0.1, 0.2, 0.3], [1, 2, 3])
    _same(q(x), qkit.fake_quantize(x, torch.tensor([0.1, 0.2, 0.3]),
                                   torch.tensor([1, 2, 3]), quant_min=0, quant_max=255, axis=0))
    q.disable_fake_quant()
    assert torch.equal(q(x), x)
    q.enable_observer()
    assert q(torch.empty(0, 10)).shape == (0, 10)  # an empty batch observes nothing


def test_fake_quantize_with_oneflow_step_gate(gen):
    q = qkit.nn.FakeQuantize(observer=qkit.nn.MovingAverageMinMaxObserver, variant="oneflow",
                             range="absmax")
    r = ref.OneFlowMovingAverage()
    for step in range(4):
        x = torch.randn(50, generator=gen) * (step + 1)
        q(x, current_train_step=step)
        r.update(x, step)
    _same(q.activation_post_process.max_val, r.moving_max)


def test_qat_flow_with_histogram_activations(gen):
    model = torch.nn.Sequential(tq.QuantStub(), torch.nn.Conv2d(3, 4, 3), tq.DeQuantStub())
    model.train()
    model.qconfig = tq.QConfig(
        activation=qkit.nn.FakeQuantize.with_args(
            observer=qkit.nn.HistogramObserver, bins=128, quant_min=0, quant_max=127,
            dtype=torch.quint8, qscheme=torch.per_tensor_affine, scale_mode="multiply_reciprocal"),
        weight=qkit.nn.FakeQuantize.with_args(
            observer=qkit.nn.MinMaxObserver, dtype=torch.qint8,
            qscheme=torch.per_channel_symmetric, ch_axis=0, scale_mode="multiply_reciprocal"))
    tq.prepare_qat(model, inplace=True)
    for _ in range(2):
        model(torch.randn(2, 3, 8, 8, generator=gen)).sum().backward()
    model.eval()
    model.apply(tq.disable_observer)
    converted = tq.convert(model)
    assert isinstance(converted[1], torch.ao.nn.quantized.Conv2d)
    # Inputs inside the searched ranges: the converted model's quantize_per_tensor keeps the
    # full quint8 range where the fake-quant model clamps to the custom [0, 127], so only
    # unsaturated values are comparable.
    x = torch.randn(2, 3, 8, 8, generator=gen) * 0.3
    assert (converted(x) - model(x)).abs().max().item() <= converted[1].scale * 1.001


# ---- TensorQuantizer ----------------------------------------------------------------------------

def _nvidia_fake_quant(x, amax, num_bits=8, unsigned=False, narrow_range=False):
    """pytorch-quantization _tensor_quant (SPEC 4.x): scale = max_bound / amax, round half to
    even (torch.round), clamp to [min_bound, max_bound], divide by scale."""
    max_bound = torch.tensor(2.0 ** (num_bits - 1 + int(unsigned)) - 1.0)
    min_bound = torch.tensor(0.0) if unsigned else (-max_bound if narrow_range
                                                    else -max_bound - 1)
    scale = max_bound / amax
    return torch.clamp(torch.round(x * scale), min_bound, max_bound) / scale


def test_tensor_quantizer_max_calibration(gen):
    tqz = qkit.nn.TensorQuantizer(num_bits=8)
    tqz.disable_quant()
    tqz.enable_calib()
    xs = [torch.randn(100, generator=gen) * (i + 1) for i in range(3)]
    for x in xs:
        assert torch.equal(tqz(x), x)
    tqz.load_calib_amax()
    _same(tqz.amax, torch.cat(xs).abs().max().reshape(1))
    tqz.disable_calib()
    tqz.enable_quant()
    x = torch.randn(100, generator=gen) * 5
    _same(tqz(x), _nvidia_fake_quant(x, tqz.amax))
    fresh = qkit.nn.TensorQuantizer(num_bits=8)
    fresh.load_state_dict(tqz.state_dict())
    _same(fresh.amax, tqz.amax)
    _same(fresh(x), tqz(x))


def test_tensor_quantizer_per_channel_unsigned_and_histogram(gen):
    x = torch.rand(4, 50, generator=gen) * torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    tqz = qkit.nn.TensorQuantizer(num_bits=8, axis=0, unsigned=True, if_calib=True,
                                  if_quant=False)
    tqz(x)
    tqz.load_calib_amax()
    _same(tqz.amax, x.abs().amax(dim=1))
    tqz.enable_quant()
    _same(tqz(x), _nvidia_fake_quant(x, tqz.amax.reshape(4, 1), unsigned=True))
    h = qkit.nn.TensorQuantizer(calib_method="histogram", num_bins=256, if_calib=True,
                                if_quant=False)
    y = torch.randn(5000, generator=gen)
    h(y)
    h.load_calib_amax("percentile", percentile=99.9)
    assert 0 < h.amax.item() <= y.abs().max().item()
    with pytest.raises(ValueError):
        h.load_calib_amax()  # a histogram needs a method
    with pytest.raises(RuntimeError, match="collected nothing"):
        qkit.nn.TensorQuantizer(calib_method="histogram").load_calib_amax("entropy")


def test_tensor_quantizer_learned_amax(gen):
    tqz = qkit.nn.TensorQuantizer(amax=2.0, learn_amax=True)
    x = torch.randn(200, generator=gen) * 2 + 1  # more elements above amax than below -amax
    y = tqz(x)
    _same(y.detach(), _nvidia_fake_quant(x.clamp(-2.0, 2.0), torch.tensor([2.0])))
    y.sum().backward()
    # NVIDIA Clip: d amax = sum(dy over x > amax) - sum(dy over x < -amax) (through -amax)
    expect = (x > 2.0).sum() - (x < -2.0).sum()
    assert tqz.amax_param.grad.item() == float(expect)
    opt = torch.optim.SGD(tqz.parameters(), lr=0.01)
    opt.step()
    assert tqz.amax.item() != 2.0
