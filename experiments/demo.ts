// `deno task demo`: serves the page (web/), its bundle (built here into web/dist/, not committed) and the
// CIFAR-10 binary files, found, downloaded and verified exactly as `deno task train` does.

import { parseArgs } from "node:util";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { allFiles, CIFAR10, openCifar10 } from "../data/cifar10.ts";
import { heartbeat } from "./progress.ts";

export const DEMO_HELP = `deno task demo [--port P] [--host H] [--data-dir DIR] [--no-build]

Serves a page that trains the study's models on CIFAR-10 in the browser, with WebGPU (Chrome or Edge
113+, or another browser with WebGPU): pick a stage and the recipe, start, pause and resume, watch loss
and accuracy, evaluate on the test set, download the model as safetensors (\`deno task eval\` and
PyTorch load it) or load a checkpoint written by \`deno task train\`. /?autostart starts at once.

  --port P          port to listen on (default 8000; 0 picks a free one)
  --host H          address to bind (default 127.0.0.1, this machine only)
  --data-dir DIR    CIFAR-10 binary folder (else $CIFAR10_DIR, else ./data/cifar-10-batches-bin,
                    downloaded and verified when missing, as deno task train does)
  --no-build        serve the bundle already in web/dist/ instead of rebuilding it
  -h, --help        this help
`;

const WEB = fileURLToPath(new URL("../web/", import.meta.url));
export const DIST = join(WEB, "dist");

const STATIC: Record<string, [string, string]> = {
  "/": ["index.html", "text/html; charset=utf-8"],
  "/index.html": ["index.html", "text/html; charset=utf-8"],
  "/style.css": ["style.css", "text/css; charset=utf-8"],
};

/** Bundles web/app.ts for the browser into web/dist/app.js with `deno bundle` (esbuild inside). */
export async function buildBundle(log: (m: string) => void = console.log): Promise<string> {
  const out = join(DIST, "app.js");
  const cmd = new Deno.Command(Deno.execPath(), {
    args: [
      "bundle",
      "--quiet",
      "--platform",
      "browser",
      "--sourcemap",
      "linked",
      "-o",
      out,
      join(WEB, "app.ts"),
    ],
    stdout: "piped",
    stderr: "piped",
  });
  // a few seconds on a cold cache: said once it lasts 2 s, then every 5 s
  const r = await heartbeat("demo: bundling web/app.ts", () => cmd.output(), { log, quietMs: 2000 });
  if (!r.success) {
    throw new Error(`deno bundle web/app.ts failed:\n${new TextDecoder().decode(r.stderr)}`);
  }
  log(`demo: bundled web/app.ts into ${out}`);
  return out;
}

export interface DemoOptions {
  port?: number;
  host?: string;
  dataDir?: string;
  build?: boolean;
  log?: (m: string) => void;
}

export interface DemoServer {
  url: string;
  shutdown(): Promise<void>;
}

/** Finds and verifies CIFAR-10, builds the bundle and starts serving; resolves once listening. */
export async function startDemo(opts: DemoOptions = {}): Promise<DemoServer> {
  const log = opts.log ?? console.log;
  const data = await openCifar10({ dataDir: opts.dataDir, log });
  const dir = data.dir;
  const files = new Set(allFiles(CIFAR10).map((f) => f.name));
  if (opts.build ?? true) await buildBundle(log);
  else {await Deno.stat(join(DIST, "app.js")).catch(() => {
      throw new Error(`--no-build: ${join(DIST, "app.js")} does not exist; run without --no-build once`);
    });}
  const serveFile = async (path: string, type: string): Promise<Response> => {
    try {
      const f = await Deno.open(path);
      return new Response(f.readable, { headers: { "content-type": type, "cache-control": "no-cache" } });
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return new Response("not found\n", { status: 404 });
      throw e;
    }
  };
  const handler = (req: Request): Promise<Response> | Response => {
    const { pathname } = new URL(req.url);
    if (req.method !== "GET" && req.method !== "HEAD") {
      return new Response("method not allowed\n", { status: 405 });
    }
    if (pathname === "/favicon.ico") return new Response(null, { status: 204 });
    if (pathname in STATIC) return serveFile(join(WEB, STATIC[pathname][0]), STATIC[pathname][1]);
    if (pathname === "/app.js") return serveFile(join(DIST, "app.js"), "text/javascript; charset=utf-8");
    if (pathname === "/app.js.map") return serveFile(join(DIST, "app.js.map"), "application/json");
    const m = pathname.match(/^\/data\/([a-z_0-9]+\.bin)$/);
    if (m && files.has(m[1])) return serveFile(join(dir, m[1]), "application/octet-stream");
    return new Response("not found\n", { status: 404 });
  };
  const host = opts.host ?? "127.0.0.1";
  const { promise, resolve } = Promise.withResolvers<Deno.NetAddr>();
  const server = Deno.serve({ port: opts.port ?? 8000, hostname: host, onListen: resolve }, handler);
  const addr = await promise;
  const shown = addr.hostname.includes(":") ? `[${addr.hostname}]` : addr.hostname;
  return { url: `http://${shown}:${addr.port}/`, shutdown: () => server.shutdown() };
}

async function main(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    strict: true,
    options: {
      port: { type: "string" },
      host: { type: "string" },
      "data-dir": { type: "string" },
      "no-build": { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) return console.log(DEMO_HELP);
  const port = values.port === undefined ? 8000 : Number(values.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new Error(`--port needs an integer in 0..65535, got "${values.port}"`);
  }
  const demo = await startDemo({
    port,
    host: values.host,
    dataDir: values["data-dir"],
    build: !values["no-build"],
  });
  console.log(`demo: serving on ${demo.url} (Ctrl-C stops); open it in Chrome or Edge 113+ with WebGPU`);
}

if (import.meta.main) {
  try {
    await main(Deno.args);
  } catch (e) {
    console.error(`demo: ${(e as Error).message}`);
    Deno.exit(1);
  }
}
