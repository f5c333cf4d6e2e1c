"""qkit's FakeQuantize inside PyTorch's own eager QAT flow: a QConfig built from it, then
torch.ao.quantization.prepare_qat, a few training steps, and convert to a quantized model whose
output matches the fake-quantized model within one output quantization step."""
import torch
import torch.ao.quantization as tq
from torch import nn

import qkit


class SmallConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.quant = tq.QuantStub()
        self.conv1 = nn.Conv2d(3, 8, 3)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 4, 3)
        self.dequant = tq.DeQuantStub()

    def forward(self, x):
        return self.dequant(self.conv2(self.relu(self.conv1(self.quant(x)))))


def test_prepare_qat_train_convert(gen):
    torch.manual_seed(0)
    model = SmallConvNet().train()
    # Activations use 7 bits (quant_min=0, quant_max=127), as PyTorch's own x86 QAT qconfig
    # does (reduce_range): on CPUs without VNNI/AVX-512 the onednn/fbgemm int8 conv multiplies
    # u8 x s8 pairs with 16-bit saturation, so a full 0..255 activation range can overflow in
    # the *converted* model, which would be a PyTorch backend artefact, not a qkit difference.
    model.qconfig = tq.QConfig(
        activation=qkit.nn.FakeQuantize.with_args(
            quant_min=0, quant_max=127, dtype=torch.quint8, qscheme=torch.per_tensor_affine,
            scale_mode="multiply_reciprocal"),
        weight=qkit.nn.FakeQuantize.with_args(
            dtype=torch.qint8, qscheme=torch.per_channel_symmetric, ch_axis=0,
            scale_mode="multiply_reciprocal"))
    tq.prepare_qat(model, inplace=True)
    assert isinstance(model.conv1.weight_fake_quant, qkit.nn.FakeQuantize)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    before = model.conv1.weight.detach().clone()
    for _ in range(4):
        x = torch.randn(4, 3, 10, 10, generator=gen)
        loss = model(x).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert not torch.equal(before, model.conv1.weight.detach())  # gradients flowed
    model.eval()
    model.apply(tq.disable_observer)
    quantized = tq.convert(model)
    assert isinstance(quantized.conv1, torch.ao.nn.quantized.Conv2d)
    assert isinstance(quantized.conv2, torch.ao.nn.quantized.Conv2d)
    x = torch.randn(2, 3, 10, 10, generator=gen)
    step = quantized.conv2.scale
    assert (quantized(x) - model(x)).abs().max().item() <= step * 1.001
