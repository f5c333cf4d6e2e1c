"""torch.ops.qkit learned-range ops (lsq, tqt, pact, learned_clip) and their C++ autograd,
against the plain-torch references in reference.py (bit for bit, parameter gradients included:
reference.ordered_sum follows qkit's documented summation order), against torch's own
learnable fake-quant kernels (LSQ+ style; sums within a derived tolerance), and against
Distiller's / NVIDIA's module code restated in torch. Also: layouts, dtypes, threads, SIMD
targets, errors, TorchScript, and the nn modules.

About gradcheck: LSQ, TQT and PACT are piecewise constant in x and use straight-through (not
true) derivatives for x and their range parameter, so torch.autograd.gradcheck would compare
against a different quantity and is not meaningful; their analytic gradients are checked
against the references instead. learned_clip is a genuine piecewise-linear function whose
gradients are the true derivatives away from the bounds: it gets gradcheck (float64 inputs are
computed in float32, hence eps=1e-3 and 1e-3 tolerances).
"""
import math

import pytest
import torch

import qkit
import reference as ref

OPS = ["lsq_pytorch", "lsq_megengine", "tqt", "pact", "clip"]


def make_params(op, slots, gen):
    """(qkit call, reference call, parameter tensors) for one op with `slots` slots."""
    u = lambda *shape: torch.rand(*shape, generator=gen)  # noqa: E731
    if op == "lsq_pytorch":
        scale = 0.005 + 0.03 * u(slots)
        zp = -30.0 + 60.0 * u(slots)
        params = [scale, zp]
        qkw = dict(quant_min=0, quant_max=255, variant="pytorch", grad_scale=0.3)
        call = lambda x, p, axis: qkit.lsq(x, p[0], p[1], axis=axis, **qkw)  # noqa: E731
        refc = lambda x, dy, p, axis: ref.lsq_pytorch(x, dy, p[0], p[1], 0, 255, 0.3, axis)  # noqa
        spread = scale * 100
    elif op == "lsq_megengine":
        step = 0.005 + 0.03 * u(slots)
        zp = torch.round(-20.0 + 40.0 * u(slots)) + 0.25
        params = [step, zp]
        qkw = dict(quant_min=-128, quant_max=127, variant="megengine", grad_scale=0.75)
        call = lambda x, p, axis: qkit.lsq(x, p[0], p[1], axis=axis, **qkw)  # noqa: E731
        refc = lambda x, dy, p, axis: ref.lsq_megengine(  # noqa: E731
            x, dy, p[0], p[1], -128, 127, 0.75, axis)
        spread = step * 100
    elif op == "tqt":
        log2_t = -6.0 + 2.0 * u(slots)
        params = [log2_t]
        call = lambda x, p, axis: qkit.tqt(  # noqa: E731
            x, p[0], quant_min=-127, quant_max=127, axis=axis)
        refc = lambda x, dy, p, axis: ref.tqt(x, dy, p[0], -127, 127, axis)  # noqa: E731
        spread = torch.pow(2.0, log2_t) * 100
    elif op == "pact":
        alpha = 0.5 + 3.0 * u(slots)
        params = [alpha]
        call = lambda x, p, axis: qkit.pact(x, p[0], bits=5, axis=axis)  # noqa: E731
        refc = lambda x, dy, p, axis: ref.pact(x, dy, p[0], 5, axis)  # noqa: E731
        spread = alpha
    else:
        cmax = 0.2 + 2.0 * u(slots)
        cmin = -cmax * (0.5 + u(slots))
        params = [cmin, cmax]
        call = lambda x, p, axis: qkit.learned_clip(x, p[0], p[1], axis=axis)  # noqa: E731
        refc = lambda x, dy, p, axis: ref.learned_clip(x, dy, p[0], p[1], axis)  # noqa: E731
        spread = cmax
    return call, refc, params, spread


def make_input(shape, axis, spread, gen, specials=True):
    x = torch.randn(*shape, generator=gen)
    if axis is None:
        x = x * spread.reshape(())
    else:
        sh = [1] * len(shape)
        sh[axis] = -1
        x = x * spread.reshape(sh)
    if specials and x.numel() > 8:
        flat = x.view(-1)
        flat[0] = math.inf
        flat[1] = -math.inf
        flat[2] = 0.0
        flat[3] = -0.0
        flat[-1] = 3.0e38
    return x


def check_op(op, shape, axis, gen, x_dtype=torch.float32, transform=None, threads=None):
    slots = 1 if axis is None else shape[axis]
    call, refc, params, spread = make_params(op, slots, gen)
    x = make_input(shape, axis, spread, gen).to(x_dtype)
    if transform is not None:
        x = transform(x)
    ps = [p.clone().requires_grad_(True) for p in params]
    xr = x.clone().requires_grad_(True)
    if threads is not None:
        torch.set_num_threads(threads)
    out = call(xr, ps, axis)
    dy = torch.randn(out.shape, generator=gen).to(out.dtype)
    out.backward(dy)
    want_out, want_dx, t0, t1 = refc(x, dy, params, axis)
    assert out.dtype == x.dtype
    torch.testing.assert_close(out, want_out.to(x.dtype), rtol=0, atol=0, equal_nan=True)
    torch.testing.assert_close(xr.grad, want_dx.to(x.dtype), rtol=0, atol=0, equal_nan=True)
    sums = [ref.slot_sums(t0, axis), ref.slot_sums(t1, axis)]
    for i, p in enumerate(ps):
        if op == "lsq_megengine" and i == 1:
            assert p.grad is None  # MegEngine: no zero-point gradient
            continue
        torch.testing.assert_close(p.grad, sums[i], rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("n", [1, 15, 16, 17, 100, 4099, 70000])
def test_per_tensor_matches_reference(op, n, gen):
    check_op(op, (n,), None, gen)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("shape,axis", [((3, 4, 5), 0), ((3, 4, 5), 1), ((6, 7), -1),
                                        ((64, 33), 0), ((2, 1000), 1)])
def test_per_channel_matches_reference(op, shape, axis, gen):
    check_op(op, shape, axis % len(shape), gen)


@pytest.mark.parametrize("op", OPS)
def test_non_contiguous_half_and_bfloat16(op, gen):
    check_op(op, (40, 30), None, gen, transform=lambda t: t.t())
    check_op(op, (40, 30), None, gen, transform=lambda t: t[:, ::3])
    check_op(op, (40, 30), 1, gen, transform=lambda t: t.t().contiguous().t())
    check_op(op, (33, 17), None, gen, x_dtype=torch.float16)
    check_op(op, (33, 17), 0, gen, x_dtype=torch.bfloat16,
             transform=lambda t: t.t().contiguous().t())


@pytest.mark.parametrize("op", OPS)
def test_float64_is_computed_in_float32(op, gen):
    call, refc, params, spread = make_params(op, 1, gen)
    x = make_input((300,), None, spread, gen)
    out64 = call(x.double(), params, None)
    assert out64.dtype == torch.float64
    torch.testing.assert_close(out64, call(x, params, None).double(), rtol=0, atol=0,
                               equal_nan=True)


@pytest.mark.parametrize("op", OPS)
def test_one_and_two_threads_are_identical(op, gen):
    slots = 1
    call, _, params, spread = make_params(op, slots, gen)
    x = make_input((3 * 65536 + 5,), None, spread, gen)
    dy = torch.randn(x.shape, generator=gen)
    results = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        ps = [p.clone().requires_grad_(True) for p in params]
        xr = x.clone().requires_grad_(True)
        call(xr, ps, None).backward(dy)
        results.append([xr.grad] + [p.grad for p in ps if p.grad is not None])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("target", qkit.ops.available_targets())
def test_every_simd_target(target, gen):
    qkit.ops.force_target(target)
    assert qkit.ops.current_target() == target
    for op in OPS:
        check_op(op, (1037,), None, gen)
        check_op(op, (5, 41), 1, gen)


# ---- against torch's own learnable fake quant (LSQ+): bit-exact values, tolerant sums ---------

def _torch_learnable(x, scale, zp, qmin, qmax, g, axis):
    if axis is None:
        return torch._fake_quantize_learnable_per_tensor_affine(x, scale, zp, qmin, qmax, g)
    return torch._fake_quantize_learnable_per_channel_affine(x, scale, zp, axis, qmin, qmax, g)


def _torch_learnable_is_fused():
    """Whether this torch's learnable backward kernels were compiled with FMA contraction (its
    AVX2 / AVX-512 builds): probe values from tests/cpp/learned_range_test.cc."""
    s = torch.tensor([0.0173], requires_grad=True)
    torch._fake_quantize_learnable_per_tensor_affine(
        torch.tensor([1.3339108228683472]), s, torch.tensor([3.0]), -128, 127,
        0.7).backward(torch.ones(1))
    fused, separate = -0.07326899468898773, -0.07326892018318176
    assert s.grad.item() in (fused, separate), s.grad.item()
    return s.grad.item() == fused


@pytest.mark.parametrize("axis", [None, 0, 1])
@pytest.mark.parametrize("qrange", [(0, 255), (-128, 127)])
def test_lsq_pytorch_matches_torch_learnable(axis, qrange, gen):
    qmin, qmax = qrange
    fused = _torch_learnable_is_fused()
    shape = (7, 300)
    slots = 1 if axis is None else shape[axis]
    scale = 0.01 + 0.02 * torch.rand(slots, generator=gen)
    # Zero points with .5 fractions (where the per-tensor backward's trunc(z + 0.5) differs from
    # the forward's RNE) and values outside the range (clamped).
    zp = torch.round(-40 + 400 * torch.rand(slots, generator=gen)) + 0.5
    x = torch.randn(shape, generator=gen) * 2.0
    dy = torch.randn(shape, generator=gen)
    g = 0.7
    xa, sa, za = (t.clone().requires_grad_(True) for t in (x, scale, zp))
    xb, sb, zb = (t.clone().requires_grad_(True) for t in (x, scale, zp))
    out_q = qkit.lsq(xa, sa, za, quant_min=qmin, quant_max=qmax, grad_scale=g, axis=axis,
                     fused=fused)
    out_t = _torch_learnable(xb, sb, zb, qmin, qmax, g, axis)
    torch.testing.assert_close(out_q, out_t, rtol=0, atol=0)
    out_q.backward(dy)
    out_t.backward(dy)
    torch.testing.assert_close(xa.grad, xb.grad, rtol=0, atol=0)
    # Whole-tensor sums: same terms, different summation order (tolerance: reference.py).
    _, _, t0, t1 = ref.lsq_pytorch(x, dy, scale, zp, qmin, qmax, g, axis)
    for got, want, terms in ((sa.grad, sb.grad, t0), (za.grad, zb.grad, t1)):
        tol = ref.sum_tolerance(terms, axis)
        assert ((got.double() - want.double()).abs() <= tol).all(), (got, want, tol)
    # Per element (a one-element sum is the term itself on both sides): bit for bit.
    for k in torch.randint(0, x.numel(), (60,), generator=gen).tolist():
        i, j = divmod(k, shape[1])
        c = 0 if axis is None else (i if axis == 0 else j)
        xe = x[i:i + 1, j:j + 1]
        pa = [scale[c:c + 1].clone().requires_grad_(True), zp[c:c + 1].clone().requires_grad_(True)]
        pb = [scale[c:c + 1].clone().requires_grad_(True), zp[c:c + 1].clone().requires_grad_(True)]
        ax = None if axis is None else 0
        qkit.lsq(xe, pa[0], pa[1], quant_min=qmin, quant_max=qmax, grad_scale=g, axis=ax,
                 fused=fused).backward(dy[i:i + 1, j:j + 1])
        _torch_learnable(xe, pb[0], pb[1], qmin, qmax, g, ax).backward(dy[i:i + 1, j:j + 1])
        assert pa[0].grad.item() == pb[0].grad.item(), (k, pa[0].grad, pb[0].grad)
        assert pa[1].grad.item() == pb[1].grad.item(), (k, pa[1].grad, pb[1].grad)


def test_lsq_spec_10_5_through_torch():
    # SPEC §10.5 (s = 0.1, zp = 0, [-128, 127], dy = 1): PyTorch learnable column; the sums of
    # gs over the seven rows and of the zero point's -s over the two clipped rows.
    x = torch.tensor([-13.0, -0.26, 0.04, 0.05, 0.15, 12.74, 12.8], requires_grad=True)
    s = torch.tensor([0.1], requires_grad=True)
    z = torch.tensor([0.0], requires_grad=True)
    y = qkit.lsq(x, s, z)
    torch.testing.assert_close(y, torch.tensor([-12.8, -0.3, 0.0, 0.0, 0.2, 12.7, 12.7]),
                               rtol=0, atol=0)
    dx, ds, dz = qkit.ops.lsq_backward(torch.ones(7), x.detach(), s.detach(), z.detach())
    torch.testing.assert_close(dx, torch.tensor([0.0, 1, 1, 1, 1, 1, 0]), rtol=0, atol=0)
    gs = [-128.0, -0.4000002145767212, -0.3999999761581421, -0.5, 0.4999999701976776,
          -0.39999961853027344, 127.0]
    torch.testing.assert_close(ds, ref.ordered_sum(torch.tensor(gs)).reshape(1), rtol=0, atol=0)
    torch.testing.assert_close(dz, torch.tensor([-0.2]), rtol=0, atol=0)


def test_lsq_megengine_spec_10_5_and_module():
    x = torch.tensor([-13.0, -0.26, 0.04, 0.05, 0.15, 12.74, 12.8])
    y = qkit.lsq(x, torch.tensor([0.1]), torch.tensor([0.0]), variant="megengine")
    # MegEngine column: RHAZ (0.05 -> 0.1).
    torch.testing.assert_close(y, torch.tensor([-12.8, -0.3, 0.0, 0.1, 0.2, 12.7, 12.7]),
                               rtol=0, atol=0)
    dx, ds, dz = qkit.ops.lsq_backward(torch.ones(7), x, torch.tensor([0.1]),
                                       torch.tensor([0.0]), variant="megengine")
    torch.testing.assert_close(dx, torch.tensor([0.0, 1, 1, 1, 1, 0, 0]), rtol=0, atol=0)
    gs = [-128.0, -0.40000009536743164, -0.3999999761581421, 0.5, 0.5, 127.0, 127.0]
    torch.testing.assert_close(ds, ref.ordered_sum(torch.tensor(gs)).reshape(1), rtol=0, atol=0)
    torch.testing.assert_close(dz, torch.zeros(1), rtol=0, atol=0)
    # The module: step 0.1 - eps so that |step| + eps == 0.1 (MegEngine's set_qparams).
    m = qkit.nn.LSQ(variant="megengine")
    m.set_qparams(0.1)
    assert m.step_size.item() == pytest.approx(0.1 - 1e-5)
    m(x).sum().backward()
    assert m.step_size.grad is not None and m.zero_point.requires_grad is False


def test_tqt_spec_10_6():
    x = torch.tensor([-16.0, -0.3, 0.1, 15.9, 15.95, 16.0])
    log2_t = torch.tensor([-3.0])
    y = qkit.tqt(x, log2_t)
    torch.testing.assert_close(y, torch.tensor([-15.875, -0.25, 0.125, 15.875, 15.875, 15.875]),
                               rtol=0, atol=0)
    dx, g = qkit.ops.tqt_backward(torch.ones(6), x, log2_t)
    torch.testing.assert_close(dx, torch.tensor([0.0, 1, 1, 1, 0, 0]), rtol=0, atol=0)
    terms = [-11.003711700439453, 0.03465736657381058, 0.01732867769896984,
             -0.0173284150660038, 11.003711700439453, 11.003711700439453]
    torch.testing.assert_close(g, ref.ordered_sum(torch.tensor(terms)).reshape(1), rtol=0,
                               atol=0)


# ---- against the systems' module code restated in torch ----------------------------------------

def test_pact_matches_distiller_module(gen):
    x = torch.randn(5000, generator=gen) * 3
    x[:4] = torch.tensor([-1.0, 0.0, 2.0, 100.0])
    alpha = torch.tensor([2.0])
    dy = torch.randn(5000, generator=gen)
    xa, aa = x.clone().requires_grad_(True), alpha.clone().requires_grad_(True)
    xb, ab = x.clone().requires_grad_(True), alpha.clone().requires_grad_(True)
    out_q = qkit.pact(xa, aa, bits=4)
    out_d = ref.distiller_pact_module(xb, ab, 4)
    torch.testing.assert_close(out_q, out_d, rtol=0, atol=0)
    out_q.backward(dy)
    out_d.backward(dy)
    torch.testing.assert_close(xa.grad, xb.grad, rtol=0, atol=0)
    terms = torch.where(torch.relu(x) < alpha, torch.zeros_like(dy), dy)
    assert abs(aa.grad.item() - ab.grad.item()) <= ref.sum_tolerance(terms, None).item()


def test_pact_multiplier_is_reciprocal_times_n():
    # 2^8 - 1 = 255; alpha = 3: torch evaluates 255 / alpha as reciprocal(alpha) * 255.
    alpha = torch.tensor([3.0])
    scale, _ = ref.distiller_asymmetric_scale(8, alpha.clone())
    x = torch.tensor([1.0, 2.0, 2.9])
    want = torch.round(scale * x) / scale
    torch.testing.assert_close(qkit.pact(x, alpha, bits=8), want, rtol=0, atol=0)


def test_learned_clip_matches_nvidia_clip_function(gen):
    x = torch.randn(3000, generator=gen) * 2
    x[:3] = torch.tensor([-1.0, 2.0, 0.5])  # values exactly on the bounds
    cmin, cmax = torch.tensor([-1.0]), torch.tensor([2.0])
    dy = torch.randn(3000, generator=gen)
    args_q = [t.clone().requires_grad_(True) for t in (x, cmin, cmax)]
    args_n = [t.clone().requires_grad_(True) for t in (x, cmin, cmax)]
    out_q = qkit.learned_clip(*args_q)
    out_n = ref.NvidiaClipFunction.apply(*args_n)
    torch.testing.assert_close(out_q, out_n, rtol=0, atol=0)
    out_q.backward(dy)
    out_n.backward(dy)
    torch.testing.assert_close(args_q[0].grad, args_n[0].grad, rtol=0, atol=0)
    _, _, t0, t1 = ref.learned_clip(x, dy, cmin, cmax)
    for i, t in ((1, t0), (2, t1)):
        assert abs(args_q[i].grad.item() - args_n[i].grad.item()) <= \
            ref.sum_tolerance(t, None).item()


def test_learned_clip_gradcheck(gen):
    # Inputs kept at least 0.05 away from the bounds (the kinks), float64 form.
    x = torch.rand(40, generator=gen, dtype=torch.float64) * 4 - 2
    x = torch.where((x + 1).abs() < 0.05, x + 0.1, x)
    x = torch.where((x - 1.5).abs() < 0.05, x + 0.1, x)
    x.requires_grad_(True)
    cmin = torch.tensor([-1.0], dtype=torch.float64, requires_grad=True)
    cmax = torch.tensor([1.5], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(qkit.learned_clip, (x, cmin, cmax), eps=1e-3, atol=1e-3,
                                    rtol=1e-3)


# ---- errors ----------------------------------------------------------------------------------

def test_errors_name_argument_and_value():
    x = torch.randn(4, 3)
    s = torch.tensor([0.1])
    with pytest.raises(ValueError, match="device meta"):
        qkit.lsq(x.to("meta"), s)
    with pytest.raises(ValueError, match="`x` has dtype Int"):
        qkit.lsq(torch.ones(3, dtype=torch.int32), s)
    with pytest.raises(ValueError, match=r"`bits`=17 outside \[2, 16\]"):
        qkit.pact(x, torch.tensor([1.0]), bits=17)
    with pytest.raises(ValueError, match="`quant_min`=5 must be < `quant_max`=5"):
        qkit.lsq(x, s, quant_min=5, quant_max=5)
    with pytest.raises(ValueError, match=r"`step`\[0\]=-0.1"):
        qkit.lsq(x, torch.tensor([-0.1]))
    with pytest.raises(IndexError, match="`axis`=2 out of range"):
        qkit.lsq(x, s, axis=2)
    with pytest.raises(ValueError, match="`step` has 1 element"):
        qkit.lsq(x, s, axis=1)
    with pytest.raises(ValueError, match="`variant`='onnx'"):
        qkit.lsq(x, s, variant="onnx")
    with pytest.raises(ValueError, match=r"`log2_t`\[0\]=200"):
        qkit.tqt(x, torch.tensor([200.0]))
    with pytest.raises(ValueError, match="`dy` has shape"):
        qkit.ops.tqt_backward(torch.ones(3), x, torch.tensor([0.0]))


def test_meta_tensor_requiring_grad_gets_the_same_clear_error():
    x = torch.empty(4, device="meta", requires_grad=True)
    with pytest.raises(ValueError, match="CPU tensors only"):
        qkit.pact(x, torch.tensor([1.0]))


# ---- TorchScript and C++-visible schema --------------------------------------------------------

def test_torchscript_calls_the_ops(gen):
    @torch.jit.script
    def f(x: torch.Tensor, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        y = torch.ops.qkit.lsq(x, s, None, quant_min=-128, quant_max=127, variant="megengine")
        return torch.ops.qkit.tqt(y, t, quant_min=-127, quant_max=127)

    x = torch.randn(100, generator=gen)
    s, t = torch.tensor([0.05]), torch.tensor([-4.0])
    want = qkit.tqt(qkit.lsq(x, s, variant="megengine"), t)
    torch.testing.assert_close(f(x, s, t), want, rtol=0, atol=0)
    assert "qkit::lsq" in str(f.graph)


# ---- modules ---------------------------------------------------------------------------------

def test_modules_train_and_round_trip_state_dict(gen):
    x = torch.randn(64, 8, generator=gen)
    factories = [
        lambda: qkit.nn.LSQ(scale=0.05, use_grad_scaling=True),
        lambda: qkit.nn.LSQ(variant="megengine"),
        lambda: qkit.nn.LSQ(0, 255, scale=[0.05] * 8, zero_point=[3.0] * 8, ch_axis=1,
                            channel_len=8),
        lambda: qkit.nn.TQT(log2_t=-4.0),
        lambda: qkit.nn.PACT(4, 2.0),
        lambda: qkit.nn.LearnedClip(-1.0, 1.0, True, True),
    ]
    for make in factories:
        m = make()
        params = list(m.parameters())
        before = [p.detach().clone() for p in params]
        m(x).square().sum().backward()
        for p in params:
            assert p.grad is not None and torch.isfinite(p.grad).all(), m
        torch.optim.SGD(params, lr=1e-3).step()
        assert any(not torch.equal(a, p.detach()) for a, p in zip(before, params)), m
        m2 = make()
        m2.load_state_dict(m.state_dict())
        for (k, v), (k2, v2) in zip(m.state_dict().items(), m2.state_dict().items()):
            assert k == k2 and torch.equal(v, v2), (m, k)


def test_lsq_module_grad_scaling_uses_core_factor(gen):
    x = torch.randn(1000, generator=gen)
    m = qkit.nn.LSQ(scale=0.02, use_grad_scaling=True)
    m(x).sum().backward()
    g = qkit.lsq_grad_scale(1000, 127)
    assert g == pytest.approx(1.0 / math.sqrt(1000 * 127), rel=1e-7)
    _, _, t0, _ = ref.lsq_pytorch(x, torch.ones(1000), torch.tensor([0.02]), torch.tensor([0.0]),
                                  -128, 127, g)
    torch.testing.assert_close(m.step_size.grad, ref.ordered_sum(t0).reshape(1), rtol=0, atol=0)


def test_fake_quant_enabled_toggle(gen):
    m = qkit.nn.TQT(log2_t=-2.0)
    x = torch.randn(10, generator=gen)
    m.disable_fake_quant()
    assert torch.equal(m(x), x)
    m.enable_fake_quant()
    assert not torch.equal(m(x), x)
