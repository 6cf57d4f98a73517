#!/usr/bin/env python3
"""Golden values for the non-convolution ops, from PyTorch.

Writes tests/fixtures/ops.json: for each case the inputs and parameters, an upstream gradient, the
outputs and the gradient of sum(output * upstream) with respect to every input and parameter (and,
for BatchNorm, the running statistics). tests/registry_test.ts replays every case on the GPU, through
the op of tests/registry.ts that claims it.

Inputs are drawn in float32 and the reference is computed in float64 from those exact values, so the
fixture holds the true result of the op (PyTorch's float32 kernels have errors of their own, e.g.
GELU's 1 + erf(x) cancels for x << 0).

Run from the repository root with Debian's PyTorch:  /usr/bin/python3 scripts/golden/ops.py
"""

import json
import os

import torch
import torch.nn.functional as F

torch.set_num_threads(1)
torch.manual_seed(0)
gen = torch.Generator().manual_seed(1234)

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "ops.json")


def rand(*shape, scale=1.0, offset=0.0):
    """Uniform in offset ± scale, exactly representable in float32, as a float64 tensor."""
    x = (torch.rand(tuple(shape), generator=gen, dtype=torch.float64) * 2 - 1) * scale + offset
    return x.float().double()


def enc(t):
    t = t.detach()
    return {"shape": list(t.shape), "data": [float("%.9g" % v) for v in t.reshape(-1).tolist()]}


cases = []


def case(name, op, args, inputs, fn, extra=None):
    """Runs fn(**inputs) in float64, backpropagates a random upstream gradient, records everything."""
    leaves = {k: v.clone().requires_grad_(v.is_floating_point()) for k, v in inputs.items()}
    out = fn(**leaves)
    up = rand(*out.shape)
    (out * up).sum().backward()
    entry = {
        "name": name,
        "op": op,
        "args": args,
        "inputs": {k: enc(v) for k, v in inputs.items()},
        "upstream": enc(up),
        "output": enc(out),
        "grads": {k: enc(v.grad) for k, v in leaves.items() if v.grad is not None},
    }
    if extra:
        entry.update(extra(leaves))
    cases.append(entry)


# ---------------------------------------------------------------- activations

gx = torch.cat([
    torch.tensor([0.0, -0.0, 1e-4, -1e-4, 0.5, -0.5, 3.0, -3.0, 5.0, -5.0, 8.0, -8.0, 10.0, -10.0, 30.0, -30.0]),
    rand(24, scale=4.0),
]).double()
case("gelu", "gelu", {}, {"x": gx}, lambda x: F.gelu(x))
case("softmax dim 1 of [3, 10]", "softmax", {"dim": 1}, {"x": rand(3, 10, scale=3.0)},
     lambda x: F.softmax(x, dim=1))
case("softmax dim -1 of [2, 3, 4]", "softmax", {"dim": -1}, {"x": rand(2, 3, 4, scale=3.0)},
     lambda x: F.softmax(x, dim=-1))
case("softmax dim 1 of [2, 5, 3, 3]", "softmax", {"dim": 1}, {"x": rand(2, 5, 3, 3, scale=3.0)},
     lambda x: F.softmax(x, dim=1))

# ---------------------------------------------------------------- loss

t6 = [9, 1, 1, 0, 5, 3]
case("crossEntropy [6, 10]", "crossEntropy", {"targets": t6}, {"logits": rand(6, 10, scale=3.0)},
     lambda logits: F.cross_entropy(logits, torch.tensor(t6)))
big = torch.round(rand(3, 5, scale=1e4))
case("crossEntropy with logits ~1e4", "crossEntropy", {"targets": [0, 4, 2]}, {"logits": big},
     lambda logits: F.cross_entropy(logits, torch.tensor([0, 4, 2])))
case("crossEntropy of softmax (double softmax)", "crossEntropySoftmax", {"targets": [2, 0, 4]},
     {"logits": rand(3, 5, scale=2.0)},
     lambda logits: F.cross_entropy(F.softmax(logits, dim=1), torch.tensor([2, 0, 4])))

# ---------------------------------------------------------------- norms

for shape, groups in [([2, 6, 5, 5], 1), ([1, 6, 5, 5], 3), ([3, 5, 3, 3], 5)]:
    c = shape[1]
    case(f"groupNorm({groups}) of {shape}", "groupNorm", {"groups": groups},
         {"x": rand(*shape, scale=2.0, offset=0.5), "weight": rand(c, offset=1.0), "bias": rand(c)},
         lambda x, weight, bias, g=groups: F.group_norm(x, g, weight, bias, eps=1e-5))
case("layerNorm(16) of [3, 16]", "layerNorm", {"normalizedShape": [16]},
     {"x": rand(3, 16, scale=2.0), "weight": rand(16, offset=1.0), "bias": rand(16)},
     lambda x, weight, bias: F.layer_norm(x, [16], weight, bias, eps=1e-5))

# BatchNorm: two training steps from fresh running stats, then an eval step
bn_shape, bn_c = [3, 5, 4, 4], 5
bn_x = [rand(*bn_shape, scale=2.0, offset=0.3), rand(*bn_shape, scale=1.0, offset=-1.0)]
bn_w, bn_b = rand(bn_c, offset=1.0), rand(bn_c)
rm, rv = torch.zeros(bn_c, dtype=torch.float64), torch.ones(bn_c, dtype=torch.float64)
for step in range(2):
    before = (rm.clone(), rv.clone())

    def bn(x, weight, bias):
        return F.batch_norm(x, rm, rv, weight, bias, training=True, momentum=0.1, eps=1e-5)

    case(f"batchNorm2d training step {step + 1}", "batchNorm2d",
         {"training": True, "momentum": 0.1, "runningMean": enc(before[0]), "runningVar": enc(before[1])},
         {"x": bn_x[step], "weight": bn_w, "bias": bn_b}, bn,
         extra=lambda _l: {"runningMeanAfter": enc(rm), "runningVarAfter": enc(rv)})
case("batchNorm2d eval", "batchNorm2d",
     {"training": False, "momentum": 0.1, "runningMean": enc(rm), "runningVar": enc(rv)},
     {"x": rand(*bn_shape, scale=2.0), "weight": bn_w, "bias": bn_b},
     lambda x, weight, bias: F.batch_norm(x, rm, rv, weight, bias, training=False, eps=1e-5))

# ---------------------------------------------------------------- pooling, linear, layer scale

case("adaptiveAvgPool2d(1) of [2, 5, 9, 9]", "adaptiveAvgPool2d", {"outputSize": 1}, {"x": rand(2, 5, 9, 9)},
     lambda x: F.adaptive_avg_pool2d(x, 1))
case("adaptiveAvgPool2d(4) of [1, 3, 9, 9]", "adaptiveAvgPool2d", {"outputSize": 4}, {"x": rand(1, 3, 9, 9)},
     lambda x: F.adaptive_avg_pool2d(x, 4))
case("linear [3, 16] -> [3, 10]", "linear", {},
     {"x": rand(3, 16), "weight": rand(10, 16, scale=0.25), "bias": rand(10, scale=0.25)},
     lambda x, weight, bias: F.linear(x, weight, bias))
case("layer scale [2, 5, 3, 3] * gamma[5, 1, 1]", "layerScale", {},
     {"x": rand(2, 5, 3, 3), "gamma": rand(5)},
     lambda x, gamma: x * gamma.reshape(5, 1, 1))

with open(OUT, "w") as f:
    json.dump({"generator": "scripts/golden/ops.py", "torch": torch.__version__, "cases": cases}, f,
              separators=(",", ":"))
print(f"wrote {len(cases)} cases to {os.path.normpath(OUT)} ({os.path.getsize(OUT)} bytes)")
