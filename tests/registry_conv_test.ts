// The registry sweep (tests/registry_sweep.ts) of the convolution family: conv2d, the pointwise MLP and
// the depthwise conv + GroupNorm, every variant of every pass under both adapter profiles.

import { setup } from "./helpers.ts";
import { CONV_OPS, registerSweeps } from "./registry_sweep.ts";

await setup();

registerSweeps((op) => CONV_OPS.has(op));
