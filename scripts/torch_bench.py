#!/usr/bin/env python3
"""PyTorch CPU training steps for `deno task bench --compare torch` (bench/torch.ts runs this).

The models are the notebook's, from scripts/golden/models.py (imported, not copied). A step is what
bench/steps.ts times: forward + cross-entropy + backward + AdamW(lr 0.004, weight decay 0.05) on a
random batch of 32x32 images, timed by wall clock: `warmup` steps, then the median of `runs` steps.

Input, a JSON object as the first argument or on stdin ("-" or no argument):
  {"threads": 2, "cases": [{"name": "final narrow", "stage": "final", "batch": 64,
     "widths": [16, 32, 64, 128], "depths": [1, 1, 3, 1], "stemFeatures": 16, "softmaxHead": false,
     "expectParams": 305690, "warmup": 1, "runs": 2}], "measure": true}
"device": "cuda" runs the steps on the GPU (synchronised around each timed step; default "cpu").
`expectParams` is our parameter count: a case whose PyTorch model differs is not timed and gets an
"error". With "measure": false the models are only built and counted.

Output, one JSON object on stdout:
  {"torch": "1.13.0", "python": "/usr/bin/python3", "pid": 1234, "load1": 0.05, "threads": 2, "cpus": 2,
   "mkldnn": true,
   "results": [{"name", "stage", "batch", "params", "warmup", "runs", "samplesMs": [...],
                "medianMs", "minMs", "maxMs", "cpuMs", "nivcsw", "error": null}]}
"cpuMs" is the process's CPU time over the timed steps (all threads), "nivcsw" its involuntary context
switches meanwhile (preemptions: another runnable thread took a core; PyTorch's threads meet at a
barrier in every op, so one preempted thread stalls the others).
Exit status 3 (with {"unavailable": reason}) when torch cannot be imported; 2 on bad input.
"""

import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "golden"))


def fail(code, **obj):
    print(json.dumps(obj))
    sys.exit(code)


try:
    import torch
    import torch.nn.functional as F

    import models  # scripts/golden/models.py: the notebook's modules
except ImportError as e:
    fail(3, unavailable=f"{sys.executable}: {e}")


def read_request():
    arg = sys.argv[1] if len(sys.argv) > 1 else "-"
    text = sys.stdin.read() if arg == "-" else arg
    try:
        req = json.loads(text)
    except json.JSONDecodeError as e:
        fail(2, error=f"input is not JSON: {e}")
    if not isinstance(req, dict) or not isinstance(req.get("cases"), list):
        fail(2, error='input must be an object with a "cases" list')
    return req


def run_case(c, measure, device):
    name = c.get("name", c.get("stage"))
    out = {"name": name, "stage": c.get("stage"), "batch": c.get("batch"), "params": None,
           "warmup": int(c.get("warmup", 1)), "runs": int(c.get("runs", 2)), "samplesMs": [],
           "medianMs": None, "minMs": None, "maxMs": None, "cpuMs": None, "nivcsw": None, "error": None}
    try:
        stage = c["stage"]
        if stage not in models.STAGES:
            raise ValueError(f"unknown stage {stage!r}")
        batch = int(c["batch"])
        if batch < 1:
            raise ValueError(f"batch must be positive, got {batch}")
        torch.manual_seed(1)
        model = models.build(stage, widths=tuple(c.get("widths", (64, 128, 256, 512))),
                             depths=c.get("depths"), stem=int(c.get("stemFeatures", 64)),
                             softmax=bool(c.get("softmaxHead", stage != "final")))
        params = list(model.parameters())
        out["params"] = sum(p.numel() for p in params)
        want = c.get("expectParams")
        if want is not None and out["params"] != want:
            raise ValueError(f"PyTorch model has {out['params']} parameters, ours {want}: not the same model")
        if not measure:
            return out
        model.to(device).train()
        opt = torch.optim.AdamW(params, lr=0.004, weight_decay=0.05)
        x = torch.randn(batch, 3, 32, 32).to(device)
        labels = (torch.arange(batch, dtype=torch.int64) % 10).to(device)  # bench/steps.ts: i % 10
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

        def step():
            loss = F.cross_entropy(model(x), labels)
            opt.zero_grad()
            loss.backward()
            opt.step()

        for _ in range(out["warmup"]):
            step()
        r0, c0 = resource.getrusage(resource.RUSAGE_SELF), time.process_time()
        for _ in range(max(1, out["runs"])):
            sync()
            t0 = time.perf_counter()
            step()
            sync()
            out["samplesMs"].append((time.perf_counter() - t0) * 1e3)
        # the process's CPU time (all threads) and how often the kernel preempted it: on an idle machine
        # about threads x wall time and few preemptions
        out["cpuMs"] = (time.process_time() - c0) * 1e3
        out["nivcsw"] = resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw - r0.ru_nivcsw
        s = out["samplesMs"]
        out.update(medianMs=statistics.median(s), minMs=min(s), maxMs=max(s))
    except Exception as e:  # one bad case is reported, the others still run
        out["error"] = f"{type(e).__name__}: {e}"
    return out


def main():
    load1 = os.getloadavg()[0]  # before this process adds its own threads
    req = read_request()
    cpus = len(os.sched_getaffinity(0))  # the CPUs this process may run on if hasattr(os, "sched_getaffinity") else os.cpu_count()
    threads = int(req.get("threads") or cpus or 1)
    torch.set_num_threads(threads)  # models.py pins 1 thread for the golden fixtures; undo that here
    measure = bool(req.get("measure", True))
    device = torch.device(req.get("device", "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        fail(3, unavailable=f"{sys.executable}: torch {torch.__version__} sees no CUDA device")
    results = []
    for c in req["cases"]:
        results.append(run_case(c, measure, device))
        r = results[-1]
        note = r["error"] or (f"{r['medianMs']:.1f} ms/step" if measure else f"{r['params']} parameters")
        print(f"  torch {r['name']} batch {r['batch']}: {note}", file=sys.stderr, flush=True)
    print(json.dumps({"torch": torch.__version__, "python": sys.executable, "pid": os.getpid(), "load1": load1,
                      "threads": torch.get_num_threads(), "cpus": cpus,
                      "mkldnn": torch.backends.mkldnn.is_available(), "device": str(device),
                      "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
                      "results": results}))


if __name__ == "__main__":
    main()
