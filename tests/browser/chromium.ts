// Headless Chromium for the browser tests, driven by puppeteer-core: Debian's `chromium` (or
// $CHROMIUM), WebGPU on SwiftShader when the machine has no GPU, a fresh profile, no network traffic of
// its own. Page errors and console errors are collected so a test can fail on them.

import puppeteer, { type Browser, type Page } from "puppeteer-core";

/** Flags that give headless Chromium a WebGPU adapter (SwiftShader's Vulkan on a machine without GPU). */
export const WEBGPU_FLAGS = [
  "--headless=new",
  "--no-sandbox",
  "--enable-unsafe-webgpu",
  "--enable-features=Vulkan",
  "--use-angle=swiftshader",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--disable-default-apps",
  "--no-first-run",
  "--no-default-browser-check",
  "--disable-quic",
  "--disable-dev-shm-usage",
];

export function chromiumPath(): string {
  const given = Deno.env.get("CHROMIUM");
  for (const p of given ? [given] : ["/usr/bin/chromium", "/usr/bin/chromium-browser"]) {
    try {
      if (Deno.statSync(p).isFile) return p;
    } catch { /* try the next */ }
  }
  throw new Error(
    `No Chromium found (${
      given ?? "/usr/bin/chromium"
    }). Install Debian's: \`apt-get install -y chromium\`, ` +
      `or set CHROMIUM to a Chromium/Chrome binary.`,
  );
}

export interface Session {
  browser: Browser;
  page: Page;
  /** Uncaught page errors and console.error lines, in order. */
  errors: string[];
  close(): Promise<void>;
}

/** Launches Chromium with a fresh profile and opens one page at `url`. */
export async function openPage(url: string, opts: { downloadDir?: string } = {}): Promise<Session> {
  const profile = await Deno.makeTempDir({ prefix: "chromium-profile-" });
  const browser = await puppeteer.launch({
    executablePath: chromiumPath(),
    headless: true,
    args: [...WEBGPU_FLAGS, `--user-data-dir=${profile}`],
    protocolTimeout: 600_000,
  });
  const errors: string[] = [];
  const page = await browser.newPage();
  page.setDefaultTimeout(240_000);
  page.on("pageerror", (e) => errors.push(`page error: ${(e as Error).message}`));
  page.on("console", (m) => {
    if (m.type() === "error") errors.push(`console: ${m.text()}`);
    if (Deno.env.get("DEMO_TEST_VERBOSE")) console.log(`[page ${m.type()}] ${m.text()}`);
  });
  if (opts.downloadDir) {
    const cdp = await browser.target().createCDPSession();
    await cdp.send("Browser.setDownloadBehavior", {
      behavior: "allow",
      downloadPath: opts.downloadDir,
      eventsEnabled: true,
    });
  }
  await page.setViewport({ width: 1200, height: 1000 });
  await page.goto(url, { waitUntil: "load" });
  return {
    browser,
    page,
    errors,
    close: async () => {
      await browser.close();
      await Deno.remove(profile, { recursive: true }).catch(() => {});
    },
  };
}

/** Polls `fn` in the page every `everyMs` until it returns a truthy value or `timeoutMs` passes. */
export async function waitFor<T>(
  page: Page,
  fn: () => T,
  what: string,
  timeoutMs = 240_000,
  everyMs = 500,
): Promise<NonNullable<T>> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    const v = await page.evaluate(fn);
    if (v) return v as NonNullable<T>;
    await new Promise((r) => setTimeout(r, everyMs));
  }
  throw new Error(`timed out after ${timeoutMs / 1000} s waiting for ${what}`);
}
