#!/usr/bin/env python3
"""Golden values for AdamW and CosineAnnealingLR from PyTorch.

  /usr/bin/python3 scripts/golden/optim.py   # writes tests/fixtures/optim.json

* `adamw`: two parameters, their initial values, the gradient fed at every step, the learning rate of
  every step (a cosine schedule stepped after each update, so the rate changes between steps) and the
  parameters and moments after every step.
* `cosine`: the learning rate PyTorch's scheduler gives after each of 25 steps, for T_max 10 (so the
  schedule runs past T_max) with eta_min 0 and 1e-4, and for T_max 100 over 100 epochs (the recipe).
"""

import json
from pathlib import Path

import torch

torch.set_num_threads(1)
OUT = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "optim.json"


def flat(t):
    return [float(v) for v in t.detach().reshape(-1).tolist()]


def adamw_trajectory():
    g = torch.Generator().manual_seed(3)
    shapes = [[3, 5], [7]]
    params = [torch.nn.Parameter(torch.randn(*s, generator=g)) for s in shapes]
    init = [flat(p) for p in params]
    opt = torch.optim.AdamW(params, lr=0.01, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.05, foreach=False)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=4)
    steps = []
    for _ in range(6):
        grads = [torch.randn(*s, generator=g) * 0.5 for s in shapes]
        lr = opt.param_groups[0]["lr"]
        for p, gr in zip(params, grads):
            p.grad = gr.clone()
        opt.step()
        sched.step()
        steps.append({
            "lr": lr,
            "grads": [flat(gr) for gr in grads],
            "params": [flat(p) for p in params],
            "exp_avg": [flat(opt.state[p]["exp_avg"]) for p in params],
            "exp_avg_sq": [flat(opt.state[p]["exp_avg_sq"]) for p in params],
        })
    return {"shapes": shapes, "lr": 0.01, "betas": [0.9, 0.999], "eps": 1e-8, "weightDecay": 0.05,
            "init": init, "steps": steps}


def cosine(base, t_max, eta_min, n):
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([p], lr=base)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=t_max, eta_min=eta_min)
    lrs = [opt.param_groups[0]["lr"]]
    for _ in range(n):
        opt.step()
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    return {"base": base, "tMax": t_max, "etaMin": eta_min, "lrs": lrs}


def main():
    out = {
        "adamw": adamw_trajectory(),
        "cosine": [cosine(0.004, 10, 0.0, 25), cosine(0.004, 10, 1e-4, 25), cosine(0.004, 100, 0.0, 100)],
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(out))
    print("wrote", OUT)


if __name__ == "__main__":
    main()
