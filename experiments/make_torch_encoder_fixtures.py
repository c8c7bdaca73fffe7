"""Writes PyTorch checkpoints in DECA's / EMOCA's encoder layouts with random weights, and their outputs.

Run with a separate interpreter that has torch (it is not a project dependency)::

    python -m venv /tmp/torchvenv && /tmp/torchvenv/bin/pip install torch==2.13.0 numpy
    /tmp/torchvenv/bin/python experiments/make_torch_encoder_fixtures.py --out tests/fixtures/torch_encoder
    /tmp/torchvenv/bin/python experiments/make_torch_encoder_fixtures.py --full --out /tmp/full_encoder

Default (tiny, committed as test fixtures): the layout's names at widths 2-4-4-8, blocks 1-2-1-1,
head 16 → 236, on 32×32 images. ``--full``: torchvision ResNet-50 widths and blocks, head 1024,
224×224 images (about 100 MB per encoder: never commit it).

Files written under ``--out``:
  deca_model.tar      {"E_flame": state dict, "E_detail": ..., "opt": ...} in the zip format
  deca_legacy.tar     the same object in the legacy (pre-1.6) format
  emoca.ckpt          a Lightning-style checkpoint: state_dict with deca.E_flame.* and deca.E_expression.*,
                      callbacks keyed by a class, hyper-parameters in a config object
  tensors_zip.pt, tensors_legacy.pt
                      a dict of tensors covering every dtype, views with offsets, transposed and stride-0
                      tensors, a shared storage, empty and 0-d tensors
  expected.npz        images (uint8, NHWC), deca_out / emoca_out (torch outputs, eval mode) and the
                      tensors of tensors_*.pt (bfloat16 widened to float32), keys "t/<name>"

The modules are this project's own mirror of the layouts' parameter names (a torchvision-style
bottleneck ResNet); BatchNorm statistics are randomized so that the parity check covers them.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import types

import numpy as np
import torch
from torch import nn

TINY = dict(widths=(2, 4, 4, 8), blocks=(1, 2, 1, 1), hidden=16, size=32)
FULL = dict(widths=(64, 128, 256, 512), blocks=(3, 4, 6, 3), hidden=1024, size=224)
N_OUT, EXPR = 236, slice(150, 200)


class Bottleneck(nn.Module):
    def __init__(self, cin: int, width: int, stride: int):
        super().__init__()
        cout = 4 * width
        self.conv1, self.bn1 = nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width)
        self.conv2, self.bn2 = nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width)
        self.conv3, self.bn3 = nn.Conv2d(width, cout, 1, bias=False), nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = torch.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return torch.relu(y + (x if self.downsample is None else self.downsample(x)))


class Trunk(nn.Module):
    def __init__(self, widths, blocks):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, widths[0], 7, 2, 3, bias=False), nn.BatchNorm2d(widths[0])
        cin = widths[0]
        for i, (w, n) in enumerate(zip(widths, blocks)):
            layer = []
            for b in range(n):
                layer.append(Bottleneck(cin, w, (1 if i == 0 else 2) if b == 0 else 1))
                cin = 4 * w
            setattr(self, f"layer{i + 1}", nn.Sequential(*layer))
        self.features = cin

    def forward(self, x):
        x = nn.functional.max_pool2d(torch.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        for i in range(1, 5):
            x = getattr(self, f"layer{i}")(x)
        return x.mean(dim=(2, 3))  # AvgPool2d(7) at 224 px: the mean of the 7×7 map


class RegressionEncoder(nn.Module):
    def __init__(self, widths, blocks, hidden, n_out):
        super().__init__()
        self.encoder = Trunk(widths, blocks)
        self.layers = nn.Sequential(nn.Linear(self.encoder.features, hidden), nn.ReLU(), nn.Linear(hidden, n_out))

    def forward(self, x):
        return self.layers(self.encoder(x))


def randomized(module: nn.Module, gen: torch.Generator) -> nn.Module:
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=gen))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=gen))
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=gen))
                m.running_var.copy_(0.5 + 1.5 * torch.rand(m.running_var.shape, generator=gen))
                m.num_batches_tracked.fill_(7)
    return module.eval()


def _fake_module(name: str, **classes) -> None:
    """Registers stand-in classes under the names a training checkpoint uses (not installed here)."""
    parts = name.split(".")
    for i in range(1, len(parts)):  # the parent packages, so that pickle can import the name
        parent = ".".join(parts[:i])
        sys.modules.setdefault(parent, types.ModuleType(parent))
        setattr(sys.modules[parent], parts[i], types.ModuleType(".".join(parts[: i + 1])))
    mod = types.ModuleType(name)
    for cls_name, cls in classes.items():
        cls.__module__, cls.__qualname__, cls.__name__ = name, cls_name, cls_name
        setattr(mod, cls_name, cls)
    sys.modules[name] = mod
    if len(parts) > 1:
        setattr(sys.modules[".".join(parts[:-1])], parts[-1], mod)


class ModelCheckpoint:  # stands for pytorch_lightning's callback class (a dict key in checkpoints)
    pass


class DictConfig:  # stands for omegaconf's configuration container
    def __init__(self, content):
        self._content = content


def tensors() -> dict[str, torch.Tensor]:
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    shared = torch.linspace(-1, 1, 10, dtype=torch.float64)
    return collections.OrderedDict(
        f32=torch.randn(3, 5), f64=shared, f64_tail=shared[4:], f16=torch.randn(7).half(),
        bf16=torch.randn(2, 3).bfloat16(), i64=torch.arange(-5, 5), i32=torch.arange(6, dtype=torch.int32),
        i16=torch.tensor([-3, 0, 3], dtype=torch.int16), i8=torch.tensor([-128, 5, 127], dtype=torch.int8),
        u8=torch.tensor([0, 200, 255], dtype=torch.uint8), b=torch.tensor([True, False, True]),
        transposed=base.t(), column=base[:, 2], offset_view=base[1:3, 1:5], expanded=torch.tensor([1.5, 2.5]).expand(3, 2),
        empty=torch.zeros(0, 4), scalar=torch.tensor(3.25),
    )


def expected_tensor(t: torch.Tensor) -> np.ndarray:
    return (t.float() if t.dtype == torch.bfloat16 else t).contiguous().numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--full", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    spec = FULL if args.full else TINY
    os.makedirs(args.out, exist_ok=True)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    e_flame = randomized(RegressionEncoder(spec["widths"], spec["blocks"], spec["hidden"], N_OUT), gen)
    e_expr = randomized(RegressionEncoder(spec["widths"], spec["blocks"], spec["hidden"], EXPR.stop - EXPR.start), gen)
    images = np.random.default_rng(args.seed).integers(0, 256, (2, spec["size"], spec["size"], 3), dtype=np.uint8)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    with torch.no_grad():
        deca_out = e_flame(x)
        emoca_out = deca_out.clone()
        emoca_out[:, EXPR] = e_expr(x)
    detail = collections.OrderedDict(w=torch.randn(4, 3))
    deca = {"E_flame": e_flame.state_dict(), "E_detail": detail, "D_detail": detail,
            "opt": {"state": {}, "param_groups": [{"lr": 1e-4, "params": [0, 1]}]}, "global_step": 10, "batch_size": 2}
    torch.save(deca, os.path.join(args.out, "deca_model.tar"))
    torch.save(deca, os.path.join(args.out, "deca_legacy.tar"), _use_new_zipfile_serialization=False)

    _fake_module("pytorch_lightning.callbacks.model_checkpoint", ModelCheckpoint=ModelCheckpoint)
    _fake_module("omegaconf.dictconfig", DictConfig=DictConfig)
    state = collections.OrderedDict()
    for prefix, net in (("deca.E_flame.", e_flame), ("deca.E_expression.", e_expr)):
        state.update((prefix + k, v) for k, v in net.state_dict().items())
    state["deca.E_detail.w"] = detail["w"]
    ckpt = {"epoch": 3, "global_step": 10, "pytorch-lightning_version": "1.4.9", "state_dict": state,
            "callbacks": {ModelCheckpoint: {"best_model_score": torch.tensor(0.5), "best_model_path": "x.ckpt"}},
            "hyper_parameters": DictConfig({"model": {"n_exp": 50}}), "optimizer_states": [], "lr_schedulers": []}
    torch.save(ckpt, os.path.join(args.out, "emoca.ckpt"))

    out = {"images": images, "deca_out": deca_out.numpy(), "emoca_out": emoca_out.numpy()}
    if not args.full:
        t = tensors()
        torch.save(t, os.path.join(args.out, "tensors_zip.pt"))
        torch.save(t, os.path.join(args.out, "tensors_legacy.pt"), _use_new_zipfile_serialization=False)
        out.update({f"t/{k}": expected_tensor(v) for k, v in t.items()})
    np.savez(os.path.join(args.out, "expected.npz"), **out)
    print(f"wrote {sorted(os.listdir(args.out))} to {args.out} (torch {torch.__version__})")


if __name__ == "__main__":
    main()
