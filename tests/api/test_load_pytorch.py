"""load_pytorch: a TorchScript file goes through torch.onnx into the same build path as load_onnx."""

import sys

import numpy as np
import pytest

from rknnlink.api import RKNN

torch = pytest.importorskip("torch", reason="PyTorch is an optional host dependency")


class SmallNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(8)
        self.fc = torch.nn.Linear(8, 5)

    def forward(self, x):
        x = torch.nn.functional.relu6(self.bn(self.conv(x)))
        return self.fc(x.mean(dim=(2, 3)))


def test_torchscript_model_runs_like_torch(tmp_path):
    torch.manual_seed(0)
    net = SmallNet().eval()
    with torch.no_grad():
        net.bn.running_mean.uniform_(-0.5, 0.5)
        net.bn.running_var.uniform_(0.5, 2.0)
    path = tmp_path / "net.pt"
    torch.jit.trace(net, torch.zeros(1, 3, 16, 16)).save(str(path))

    rknn = RKNN()
    rknn.config(target_platform="rk3568")
    assert rknn.load_pytorch(str(path), input_size_list=[[1, 3, 16, 16]]) == 0
    assert rknn.build(do_quantization=False) == 0
    assert rknn.init_runtime() == 0
    x = np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32)
    out = rknn.inference(inputs=[x], data_format="nchw")[0]
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(out, expected, rtol=2e-2, atol=2e-2)
    rknn.release()


def test_missing_torch_is_explained(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ValueError, match="pip install torch"):
        RKNN().load_pytorch(str(tmp_path / "x.pt"), input_size_list=[[1, 3, 8, 8]])


def test_bad_input_size_list(tmp_path):
    path = tmp_path / "net.pt"
    torch.jit.trace(SmallNet().eval(), torch.zeros(1, 3, 16, 16)).save(str(path))
    with pytest.raises(ValueError, match="input_size_list"):
        RKNN().load_pytorch(str(path), input_size_list=[1, 3, 16, 16])
