#!/usr/bin/env python3
"""Golden values for the seven steps, from the notebook's own PyTorch model code.

The classes below restate the notebook's modules (../shared/seed/convnext-notebook.txt) so that the
state-dict names are the notebook's. torchvision is not needed: StochasticDepth(mode="batch") is
restated too (every golden run uses p = 0, where it is the identity).

  /usr/bin/python3 scripts/golden/models.py           # writes tests/fixtures/models_*
  /usr/bin/python3 scripts/golden/models.py --counts  # prints parameters and FLOPs of every step

`models_spec.json` lists every step's state-dict entries ("name:shape:dtype") at the notebook's widths
with depths [2, 2, 2, 2]. For each golden model one file `models_<stage>.safetensors` holds the initial weights
(PyTorch names and layouts, f32; `num_batches_tracked` as an I64 scalar like PyTorch), the input batch
`input`, the targets `target` (I64), and PyTorch's results in train and eval mode: `<mode>/output`
(softmax probabilities for steps 1-6, logits for final), `<mode>/loss`, `<mode>/grad/<param>` and, in
train mode, the updated buffers `train/buffer/<name>`. The metadata entry `golden` is a JSON string
with the configuration and the losses.
"""

import json
import math
import struct
import sys
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"


class StochasticDepth(nn.Module):
    """torchvision.ops.StochasticDepth(p, mode="batch")."""

    def __init__(self, p, mode="batch"):
        super().__init__()
        self.p = p
        self.mode = mode

    def forward(self, x):
        if not self.training or self.p == 0.0:
            return x
        survival = 1.0 - self.p
        noise = torch.empty([1] * x.ndim, dtype=x.dtype).bernoulli_(survival)
        if survival > 0.0:
            noise.div_(survival)
        return x * noise


# ---------------------------------------------------------------- steps 1-6 (ResNet family)


class utilConv(nn.Sequential):
    def __init__(self, in_features, out_features, kernel_size, stride=1, norm=nn.BatchNorm2d, act=nn.ReLU,
                 bias=True, groups=1):
        super().__init__(
            nn.Conv2d(in_features, out_features, kernel_size=kernel_size, padding=kernel_size // 2,
                      stride=stride, bias=bias, groups=groups),
            norm(out_features),
            act(),
        )


class BottleNeckBlock(nn.Module):
    """Steps 1-6: `kind` selects the notebook's block of that step."""

    def __init__(self, kind, in_features, out_features, stride=1):
        super().__init__()
        if kind in ("base", "stage_ratio", "patchify", "resnextify"):
            reduced = out_features // 4
            groups = reduced if kind == "resnextify" else 1
            self.block = nn.Sequential(
                utilConv(in_features, reduced, kernel_size=1, stride=stride, bias=False),
                utilConv(reduced, reduced, kernel_size=3, bias=False, groups=groups),
                utilConv(reduced, out_features, kernel_size=1, bias=False, act=nn.Identity),
            )
        elif kind == "inverted":
            expanded = out_features * 4
            self.block = nn.Sequential(
                utilConv(in_features, expanded, kernel_size=1, stride=stride, bias=False),
                utilConv(expanded, expanded, kernel_size=3, bias=False, groups=in_features),
                utilConv(expanded, out_features, kernel_size=1, bias=False, act=nn.Identity),
            )
        elif kind == "kernel7":
            expanded = out_features * 4
            self.block = nn.Sequential(
                utilConv(in_features, in_features, kernel_size=7, stride=stride, bias=False, groups=in_features),
                utilConv(in_features, expanded, kernel_size=1),
                utilConv(expanded, out_features, kernel_size=1, bias=False, act=nn.Identity),
            )
        else:
            raise ValueError(kind)
        if in_features != out_features:
            self.shortcut = nn.Sequential(utilConv(in_features, out_features, kernel_size=1, stride=stride, bias=False))
        else:
            self.shortcut = nn.Identity()
        self.act = nn.ReLU()

    def forward(self, x):
        res = x
        x = self.block(x)
        res = self.shortcut(res)
        x += res
        x = self.act(x)
        return x


class Stage(nn.Sequential):
    def __init__(self, kind, in_features, out_features, depth, stride=2):
        super().__init__(
            BottleNeckBlock(kind, in_features, out_features, stride=stride),
            *[BottleNeckBlock(kind, out_features, out_features) for _ in range(depth - 1)],
        )


class ResNetStem(nn.Sequential):
    def __init__(self, in_features, out_features):
        super().__init__(utilConv(in_features, out_features, kernel_size=3, stride=1))


class PatchifyStem(nn.Sequential):
    def __init__(self, in_features, out_features, patch_size=1):
        super().__init__(
            nn.Conv2d(in_features, out_features, kernel_size=patch_size, stride=patch_size),
            nn.BatchNorm2d(out_features),
        )


class Encoder(nn.Module):
    def __init__(self, kind, in_channels, stem_features, depths, widths):
        super().__init__()
        stem = ResNetStem if kind in ("base", "stage_ratio") else PatchifyStem
        self.stem = stem(in_channels, stem_features)
        in_out_widths = list(zip(widths, widths[1:]))
        self.stages = nn.ModuleList()
        self.stages.append(Stage(kind, stem_features, widths[0], depths[0], stride=1))
        for (in_features, out_features), depth in zip(in_out_widths, depths[1:]):
            self.stages.append(Stage(kind, in_features, out_features, depth))

    def forward(self, x):
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return x


class Decoder(nn.Module):
    def __init__(self, in_features, n_classes, softmax=True):
        super().__init__()
        self.avg = nn.AdaptiveAvgPool2d((1, 1))
        self.decoder = nn.Linear(in_features, n_classes)
        self.softmax = softmax

    def forward(self, x):
        x = self.avg(x)
        x = x.view(x.size(0), -1)
        x = self.decoder(x)
        if self.softmax:
            x = F.softmax(x, dim=1)
        return x


class ResNet(nn.Module):
    def __init__(self, kind, in_channels, n_classes, stem_features, depths, widths, softmax=True):
        super().__init__()
        self.encoder = Encoder(kind, in_channels, stem_features, depths, widths)
        self.decoder = Decoder(widths[-1], n_classes, softmax)

    def forward(self, x):
        return self.decoder(self.encoder(x))


# ---------------------------------------------------------------- step 7 (ConvNeXt)


class LayerScaler(nn.Module):
    def __init__(self, init_value, dimensions):
        super().__init__()
        self.gamma = nn.Parameter(init_value * torch.ones((dimensions)), requires_grad=True)

    def forward(self, x):
        return self.gamma[None, ..., None, None] * x


class ConvNextBlock(nn.Module):
    def __init__(self, in_features, out_features, expansion=4, drop_p=0.0, layer_scaler_init_value=1e-6):
        super().__init__()
        expanded = out_features * expansion
        self.block = nn.Sequential(
            nn.Conv2d(in_features, in_features, kernel_size=7, padding=3, bias=False, groups=in_features),
            nn.GroupNorm(num_groups=1, num_channels=in_features),
            nn.Conv2d(in_features, expanded, kernel_size=1),
            nn.GELU(),
            nn.Conv2d(expanded, out_features, kernel_size=1),
        )
        self.layer_scaler = LayerScaler(layer_scaler_init_value, out_features)
        self.drop_path = StochasticDepth(drop_p, mode="batch")

    def forward(self, x):
        res = x
        x = self.block(x)
        x = self.layer_scaler(x)
        x = self.drop_path(x)
        x += res
        return x


class ConvNextStage(nn.Sequential):
    def __init__(self, in_features, out_features, depth, drop_p=0.0):
        if in_features != out_features:
            super().__init__(
                nn.Sequential(
                    nn.GroupNorm(num_groups=1, num_channels=in_features),
                    nn.Conv2d(in_features, out_features, kernel_size=2, stride=2),
                ),
                *[ConvNextBlock(out_features, out_features, drop_p=drop_p) for _ in range(depth)],
            )
        else:
            super().__init__(*[ConvNextBlock(out_features, out_features, drop_p=drop_p) for _ in range(depth)])


class ConvNextEncoder(nn.Module):
    def __init__(self, in_channels, stem_features, depths, widths, drop_p=0.0):
        super().__init__()
        self.stem = PatchifyStem(in_channels, stem_features)
        in_out_widths = list(zip(widths, widths[1:]))
        drop_probs = [x.item() for x in torch.linspace(0, drop_p, sum(depths))]
        self.stages = nn.ModuleList()
        self.stages.append(ConvNextStage(stem_features, widths[0], depths[0], drop_p=drop_probs[0]))
        for (in_features, out_features), depth, dp in zip(in_out_widths, depths[1:], drop_probs[1:]):
            self.stages.append(ConvNextStage(in_features, out_features, depth, drop_p=dp))

    def forward(self, x):
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return x


class ConvNextDecoder(nn.Sequential):
    def __init__(self, num_channels, num_classes=10):
        super().__init__(
            nn.AdaptiveAvgPool2d((1, 1)),
            nn.Flatten(1),
            nn.LayerNorm(num_channels),
            nn.Linear(num_channels, num_classes),
        )


class ConvNext(nn.Sequential):
    def __init__(self, in_channels, stem_features, depths, widths, drop_p=0.0, num_classes=10):
        super().__init__()
        self.encoder = ConvNextEncoder(in_channels, stem_features, depths, widths, drop_p)
        self.head = ConvNextDecoder(widths[-1], num_classes)


STAGES = ["base", "stage_ratio", "patchify", "resnextify", "inverted", "kernel7", "final"]


def build(stage, widths=(64, 128, 256, 512), depths=None, stem=64, softmax=True):
    if stage == "final":
        return ConvNext(3, stem, list(depths or [2, 2, 6, 2]), list(widths))
    if depths is None:
        depths = [3, 4, 6, 3] if stage == "base" else [3, 3, 9, 3]
    return ResNet(stage, 3, 10, stem, list(depths), list(widths), softmax=softmax)


def flops(model, size=32):
    """2 x multiply-adds of every Conv2d and Linear for one size x size image."""
    total = [0]

    def conv_hook(m, inp, out):
        k = m.kernel_size[0] * m.kernel_size[1] * m.in_channels // m.groups
        total[0] += 2 * out[0].numel() * k

    def lin_hook(m, inp, out):
        total[0] += 2 * m.in_features * m.out_features

    hooks = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(lin_hook))
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, 3, size, size))
    for h in hooks:
        h.remove()
    return total[0]


# ---------------------------------------------------------------- safetensors (written by hand)


def save_safetensors(path, tensors, metadata=None):
    header, chunks, offset = {}, [], 0
    if metadata:
        header["__metadata__"] = metadata
    for name, t in tensors.items():
        t = t.detach().contiguous()
        if t.dtype == torch.float32:
            dtype, raw = "F32", t.numpy().astype("<f4").tobytes()
        elif t.dtype == torch.int64:
            dtype, raw = "I64", t.numpy().astype("<i8").tobytes()
        else:
            raise ValueError(t.dtype)
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for c in chunks:
            f.write(c)


def golden(stage, widths, depths, stem, seed):
    torch.manual_seed(seed)
    model = build(stage, widths, depths, stem)
    # Perturb the parameters away from their initial values so every term matters (layer scale 1e-6
    # would hide the ConvNeXt blocks; BatchNorm affine params start at exactly 1 and 0).
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("gamma"):
                p.copy_(0.5 + 0.5 * torch.rand_like(p))
            elif p.dim() == 1:
                p.add_(0.2 * torch.randn_like(p))
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(0.1 * torch.randn_like(b))
            elif name.endswith("running_var"):
                b.copy_(0.5 + torch.rand_like(b))
            elif name.endswith("num_batches_tracked"):
                b.fill_(3)
    x = torch.randn(2, 3, 32, 32)
    target = torch.tensor([3, 7], dtype=torch.int64)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    tensors = dict(init)
    tensors["input"] = x
    tensors["target"] = target
    meta = {"stage": stage, "widths": list(widths), "depths": list(depths), "stemFeatures": stem}
    for mode in ("train", "eval"):
        model.load_state_dict(init)
        model.train(mode == "train")
        model.zero_grad()
        y = model(x)
        loss = F.cross_entropy(y, target)
        loss.backward()
        tensors[f"{mode}/output"] = y.detach()
        tensors[f"{mode}/loss"] = loss.detach().reshape(1)
        for n, p in model.named_parameters():
            tensors[f"{mode}/grad/{n}"] = p.grad.detach().clone()
        if mode == "train":  # eval mode leaves the buffers alone
            for n, b in model.named_buffers():
                tensors[f"{mode}/buffer/{n}"] = b.detach().clone()
        meta[f"{mode}Loss"] = float(loss)
    save_safetensors(FIXTURES / f"models_{stage}.safetensors", tensors, {"golden": json.dumps(meta)})
    print(stage, "loss train", meta["trainLoss"], "eval", meta["evalLoss"])


def main():
    if "--counts" in sys.argv:
        for stage in STAGES:
            m = build(stage)
            print(stage, sum(p.numel() for p in m.parameters()), flops(m))
        m = build("final", (16, 32, 64, 128), (1, 1, 3, 1), 16)
        print("final-cpu", sum(p.numel() for p in m.parameters()), flops(m))
        return
    FIXTURES.mkdir(parents=True, exist_ok=True)
    spec = {}
    for stage in STAGES:  # state-dict names, shapes and dtypes of every step at widths 64..512, depths 2
        m = build(stage, depths=(2, 2, 2, 2))
        spec[stage] = [f"{k}:{'x'.join(map(str, v.shape))}:{str(v.dtype)[6:]}" for k, v in m.state_dict().items()]
    (FIXTURES / "models_spec.json").write_text(json.dumps(spec, indent=0))
    golden("final", (8, 12, 16, 24), (1, 1, 2, 1), 8, seed=7)
    golden("kernel7", (8, 12, 16, 24), (1, 1, 1, 1), 8, seed=8)


if __name__ == "__main__":
    main()
