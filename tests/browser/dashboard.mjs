// dashboard.mjs - vramd's dashboard in Debian's chromium (playwright-core, headless, off the network): models shown, offload and load by click, progress, a wrong token refused, another process's model offloaded through the node.
import { spawn } from "node:child_process";
import { mkdtempSync, mkdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { chromium } from "playwright-core";
import { startMember, waitNode } from "../support/node_member.mjs";

const VRAMD = process.env.VRAMD;
const OUT = resolve(process.env.VRAM_BROWSER_OUT || "browser-artifacts");
const TOKEN = "s3cret-token";
if (!VRAMD) { console.error("VRAMD is not set (ctest sets it)"); process.exit(2); }
mkdirSync(OUT, { recursive: true });

let failures = 0;
const check = (ok, what, detail = "") => {
  console.log(`${ok ? "ok  " : "FAIL"} ${what}${!ok && detail ? ": " + detail : ""}`);
  if (!ok) failures++;
};

// vramd on a free port, host backend, a token; its log collected
function startVramd() {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("VRAM_") && k !== "GPU_IDLE_TIMEOUT"));
  Object.assign(env, { VRAM_HOST_MEMORY: "1G", VRAM_LOG_LEVEL: "info", VRAM_NODE_SOCKET: process.env.VRAM_NODE_SOCKET || "off" });
  const cwd = mkdtempSync(join(tmpdir(), "vramd-browser-"));
  const p = spawn(VRAMD, ["--port", "0", "--backend", "host", "--token", TOKEN, "--node-socket", join(cwd, "node.sock"),
    "--model", "small=synthetic:32M:1", "--model", "big=synthetic:512M:2"], { cwd, env, stdio: ["ignore", "ignore", "pipe"] });
  const log = [];
  return new Promise((ok, fail) => {
    const t = setTimeout(() => fail(new Error("vramd did not start:\n" + log.join(""))), 30000);
    p.stderr.setEncoding("utf8");
    p.stderr.on("data", (d) => {
      log.push(d);
      const m = /listening on http:\/\/\S+:(\d+)/.exec(log.join(""));
      if (m && !p.url) { p.url = `http://127.0.0.1:${m[1]}`; clearTimeout(t); ok({ p, log, cwd }); }
    });
    p.on("exit", (c) => fail(new Error(`vramd exited ${c}:\n` + log.join(""))));
  });
}

async function api(url, method, path, body) {
  const r = await fetch(url + path, { method, headers: { "Content-Type": "application/json", Authorization: "Bearer " + TOKEN },
    body: body ? JSON.stringify(body) : undefined });
  return { status: r.status, body: await r.json() };
}

async function main() {
  const { p, log, cwd } = await startVramd();
  let member = null;
  const profile = mkdtempSync(join(tmpdir(), "vram-chromium-"));
  // a fresh --user-data-dir: playwright passes the profile directory as that flag
  const browser = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.VRAM_CHROMIUM || "/usr/bin/chromium", headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync"],
    viewport: { width: 1280, height: 900 },
  });
  try {
    const page = browser.pages()[0] || await browser.newPage();
    const foreign = [], errors = [];
    page.on("request", (r) => { if (!r.url().startsWith(p.url)) foreign.push(r.url()); });
    page.on("pageerror", (e) => errors.push(String(e)));
    // the refused actions' 401s are expected; anything else is an error
    page.on("console", (m) => { if (m.type() === "error" && !/status of 401/.test(m.text())) errors.push(m.text()); });
    let requests = 0;
    page.on("request", () => requests++);

    // the page renders both models
    const resp = await page.goto(p.url + "/");
    check(resp.status() === 200 && (resp.headers()["content-type"] || "").startsWith("text/html"), "GET / as a browser is the dashboard");
    await page.waitForSelector('tr[data-model="small"]', { timeout: 10000 });
    await page.waitForSelector('tr[data-model="big"]', { timeout: 10000 });
    check(true, "the page lists the models");
    check(await page.locator("#devices .bar").count() >= 1, "a memory bar per device");
    await page.waitForFunction(() => /No other process has joined/.test(document.querySelector("#node-note").textContent), null, { timeout: 10000 });
    check(await page.isHidden("#node-box"), "the node section is a note while vramd is alone on it");

    // a model on the GPU, loaded behind the page's back: the page shows it
    const ld = await api(p.url, "POST", "/api/v1/models/small/load");
    check(ld.status === 200, "small loaded through the API", JSON.stringify(ld.body));
    await page.waitForSelector('tr[data-model="small"][data-state="gpu"]', { timeout: 10000 });
    check(true, "the page shows small on the GPU without a reload");
    await page.waitForSelector('#events li[data-kind="load"][data-model="small"]', { timeout: 10000 });
    check(true, "the event log shows the load");

    // an action without a token: refused, the page asks for one
    await page.click('tr[data-model="small"] button[data-action="offload"]');
    await page.waitForSelector("#tokenform.show", { timeout: 10000 });
    check(/needs a token/.test(await page.textContent("#message")), "without a token the page asks for one", await page.textContent("#message"));

    // a wrong token: refused with a visible message, nothing changes
    await page.fill("#token", "not-the-token");
    await page.click('#tokenform button[type="submit"]');
    await page.click('tr[data-model="small"] button[data-action="offload"]');
    await page.waitForFunction(() => /refused the token/.test(document.querySelector("#message").textContent), null, { timeout: 10000 });
    check(await page.isVisible("#message"), "a wrong token is refused with a visible message");
    await page.screenshot({ path: join(OUT, "dashboard-wrong-token.png") });
    check((await api(p.url, "GET", "/api/v1/models/small")).body.state === "gpu", "the refused offload changed nothing");

    // the right token: a click offloads, the page shows it
    await page.fill("#token", TOKEN);
    await page.click('#tokenform button[type="submit"]');
    await page.click('tr[data-model="small"] button[data-action="offload"]');
    await page.waitForSelector('tr[data-model="small"][data-state="cpu"]', { timeout: 10000 });
    check(true, "a click offloads small and the page shows it on the CPU");

    // another process joins the node: its model is listed, a click has its owner offload it
    member = await startMember(join(cwd, "node.sock"), "svc-b", { b: 1 << 20 });
    const bid = `b@${member.pid}`;
    await page.waitForSelector(`#node tr[data-id="${bid}"][data-state="gpu"]`, { timeout: 60000 });
    check(await page.isVisible("#node-box"), "the node section shows the other process's model");
    check((await page.textContent(`#node tr[data-id="${bid}"]`)).includes("svc-b"), "its row names its owner");
    check(await page.locator('#node tr[data-owner="vramd"]').count() === 2, "vramd's own models are in the node table too");
    check(/none yet/.test(await page.textContent("#node-evictions")), "no node evictions yet");
    await page.click(`#node tr[data-id="${bid}"] button[data-action="offload"]`);
    await page.waitForSelector(`#node tr[data-id="${bid}"][data-state="cpu"]`, { timeout: 30000 });
    check(true, "a click offloads the other process's model and the page shows it on the CPU");
    const nv = await waitNode(p.url, (v) => v.members.some((mb) => mb.models.some((m) => m.id === bid && m.state === "cpu")));
    check(!!nv, "its owner offloaded it (GET /api/v1/node)");
    await page.click(`#node tr[data-id="${bid}"] button[data-action="release"]`);
    await page.waitForSelector(`#node tr[data-id="${bid}"][data-state="unloaded"]`, { timeout: 30000 });
    check(true, "a click releases it");
    await page.screenshot({ path: join(OUT, "dashboard-node.png"), fullPage: true });

    // a load by click shows its progress, then the model on the GPU
    await page.click('tr[data-model="big"] button[data-action="load"]');
    await page.waitForSelector('tr[data-model="big"][data-state="gpu"]', { timeout: 60000 });
    check(await page.evaluate(() => document.body.dataset.sawProgress) === "big", "the load of big showed its progress");
    await page.waitForSelector('#events li[data-kind="load"][data-model="big"]', { timeout: 10000 });
    await page.waitForTimeout(2500); // one more sample for the chart
    await page.screenshot({ path: join(OUT, "dashboard.png"), fullPage: true });

    // a phone-sized screen renders too
    await page.setViewportSize({ width: 390, height: 844 });
    await page.waitForTimeout(300);
    await page.screenshot({ path: join(OUT, "dashboard-phone.png"), fullPage: true });

    // polling is gentle: an idle page makes a few requests a second at most
    const before = requests;
    await page.waitForTimeout(4000);
    const rate = (requests - before) / 4;
    check(rate <= 3, `an idle page polls gently (${rate.toFixed(1)} requests/s)`);
    check(foreign.length === 0, "no request leaves vramd", foreign.join(", "));
    check(errors.length === 0, "no script errors", errors.join("; "));
  } finally {
    await browser.close();
    if (member) await member.stop();
    p.kill("SIGTERM");
    rmSync(profile, { recursive: true, force: true });
    rmSync(cwd, { recursive: true, force: true });
  }
  if (failures) console.log(log.join("").split("\n").slice(-30).join("\n"));
  console.log(`screenshots in ${OUT}`);
  process.exit(failures ? 1 : 0);
}

main().catch((e) => { console.error(e); process.exit(1); });
