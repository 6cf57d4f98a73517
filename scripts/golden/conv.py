#!/usr/bin/env python3
"""Golden values for conv2d from PyTorch: writes tests/fixtures/conv.json.

For each configuration: input x, weight w, bias b (or null), upstream gradient gy, and PyTorch's
output y = conv2d(x, w, b, stride, padding, groups) with the gradients gx, gw, gb of sum(y * gy).
Run from the repository root with Debian's PyTorch: /usr/bin/python3 scripts/golden/conv.py
"""

import json
import os

import torch
import torch.nn.functional as F

torch.set_num_threads(1)
torch.manual_seed(20240611)

# name, x shape [N, C, H, W], out channels, kernel, stride, padding, groups, bias
CONFIGS = [
    ("1x1", [2, 5, 7, 7], 6, 1, 1, 0, 1, True),
    ("1x1, vec4 GEMM path", [1, 8, 6, 6], 12, 1, 1, 0, 1, True),
    ("1x1 stride 2", [2, 5, 7, 7], 6, 1, 2, 0, 1, False),
    ("3x3 stem", [2, 3, 7, 7], 6, 3, 1, 1, 1, True),
    ("3x3 dense stride 2", [2, 5, 7, 7], 6, 3, 2, 1, 1, True),
    ("3x3 grouped, group size 4", [2, 8, 7, 7], 8, 3, 1, 1, 2, False),
    ("3x3 grouped, group size 8, stride 2", [1, 16, 7, 7], 8, 3, 2, 1, 2, True),
    ("3x3 depthwise", [2, 5, 7, 7], 5, 3, 1, 1, 5, False),
    ("7x7 depthwise", [1, 5, 7, 7], 5, 7, 1, 3, 5, True),
    ("7x7 depthwise stride 2", [1, 5, 9, 9], 5, 7, 2, 3, 5, True),
    ("2x2 stride 2", [2, 5, 7, 7], 6, 2, 2, 0, 1, True),
]


def flat(t):
    return [float("%.7g" % v) for v in t.detach().double().flatten().tolist()]


def short(t):
    """Values rounded to 3 decimals (exactly what the test uploads as f32), so inputs stay small."""
    return (torch.round(t * 1000) / 1000).to(torch.float32)


def main():
    cases = []
    for name, xs, o, k, stride, padding, groups, bias in CONFIGS:
        x = short(torch.randn(*xs)).requires_grad_()
        w = short(torch.randn(o, xs[1] // groups, k, k) * 0.5).requires_grad_()
        b = short(torch.randn(o)).requires_grad_() if bias else None
        y = F.conv2d(x, w, b, stride=stride, padding=padding, groups=groups)
        gy = short(torch.randn(*y.shape))
        (y * gy).sum().backward()
        cases.append({
            "name": name,
            "stride": stride,
            "padding": padding,
            "groups": groups,
            "xShape": list(x.shape),
            "wShape": list(w.shape),
            "yShape": list(y.shape),
            "x": flat(x),
            "w": flat(w),
            "b": flat(b) if bias else None,
            "gy": flat(gy),
            "y": flat(y),
            "gx": flat(x.grad),
            "gw": flat(w.grad),
            "gb": flat(b.grad) if bias else None,
        })
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    path = os.path.join(root, "tests", "fixtures", "conv.json")
    with open(path, "w") as f:
        json.dump({"torch": torch.__version__, "cases": cases}, f, separators=(",", ":"))
    print(f"wrote {path} ({os.path.getsize(path)} bytes, {len(cases)} cases)")


if __name__ == "__main__":
    main()
