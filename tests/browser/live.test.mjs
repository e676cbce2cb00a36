// Drives the live web UI of a real `telemetry-agent serve --http` in headless Chromium, with real shimmed Python
// programs: the process appears, the flame graph refreshes with new counts, the time-range selector changes the
// totals, the comparison of two ranges marks the function the program switched to as new, the exception groups
// show notes, chains and fates; and the first paint of a 60,000-node profile is timed (printed, never asserted).
//
// Needs AGENT_DLL (the built telemetry-agent.dll) and TELEMETRY_PYTHON (a Python >= 3.12); run-live.sh sets them.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, writeFileSync, rmSync, mkdirSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, "..", "..");
const generated = join(here, ".generated");
const agentDll = process.env.AGENT_DLL;
const python = process.env.TELEMETRY_PYTHON || "python3.12";
const chromiumPath = process.env.CHROMIUM || "/usr/bin/chromium";
const temp = mkdtempSync(join(tmpdir(), "telemetry-live-ui-"));
const socket = join(temp, "agent.sock");
const flag = join(temp, "switch");

let browser, agent, program, uiAddress;
const started = [];

/** A child process whose output lines are kept and can be waited for. */
function start(command, args, env = {}) {
  const child = spawn(command, args, { cwd: repo, env: { ...process.env, ...env }, stdio: ["pipe", "pipe", "pipe"] });
  child.lines = [];
  child.stderrText = "";
  let buffer = "";
  child.stdout.on("data", (chunk) => {
    buffer += chunk;
    let newline;
    while ((newline = buffer.indexOf("\n")) >= 0) { child.lines.push(buffer.slice(0, newline)); buffer = buffer.slice(newline + 1); }
  });
  child.stderr.on("data", (chunk) => { child.stderrText += chunk; });
  started.push(child);
  return child;
}

/** Waits until `condition` (maybe async) is true, polling; fails with `what` after `seconds`. */
async function until(condition, what, seconds = 60) {
  const deadline = Date.now() + seconds * 1000;
  for (;;) {
    const value = await condition();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function shimmed(script, ...args) {
  return start(python, ["-m", "telemetry_shim", "--socket", socket, join(here, script), ...args],
    { PYTHONPATH: join(repo, "python-shim"), TELEMETRY_SHIM_MODE: "full" });
}

before(async () => {
  assert.ok(agentDll && existsSync(agentDll), "AGENT_DLL must name a built telemetry-agent.dll (run-live.sh sets it)");
  mkdirSync(generated, { recursive: true });
  agent = start("dotnet", [agentDll, "serve", "--socket", socket, "-o", join(temp, "out"), "--http", "127.0.0.1:0", "--bucket-seconds", "1"]);
  uiAddress = await until(() => /web UI at (http:\/\/\S+?)\/?$/m.exec(agent.stderrText)?.[1], "the agent's web UI address");
  program = shimmed("live_program.py", flag);
  await until(() => program.lines.includes("phase a"), "the program's first phase");
  browser = await chromium.launch({
    executablePath: chromiumPath,
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
});

after(async () => {
  await browser?.close();
  for (const child of started.reverse()) {
    if (child.exitCode !== null) continue;
    if (child === agent) child.kill("SIGTERM"); else child.stdin.end();
    await new Promise((r) => { const timer = setTimeout(() => { child.kill("SIGKILL"); r(); }, 20000); child.on("exit", () => { clearTimeout(timer); r(); }); });
  }
  rmSync(temp, { recursive: true, force: true });
});

/** The UI page, with every request that does not go to the agent refused and counted. */
async function openUi() {
  const context = await browser.newContext({ viewport: { width: 1400, height: 1000 } });
  const problems = [];
  await context.route("**/*", (route) => {
    const url = route.request().url();
    if (url.startsWith(uiAddress) || url.startsWith("data:") || url === "about:blank") return route.continue();
    problems.push(`blocked request: ${url}`);
    return route.abort();
  });
  const page = await context.newPage();
  page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
  page.on("console", (message) => { if (message.type() === "error") problems.push(`console error: ${message.text()}`); });
  await page.goto(uiAddress + "/");
  return { context, page, problems };
}

/** The flame graph frame's embedded data, decoded here: calls and totals per function label, and the root's total. */
async function graphData(frame) {
  return frame.evaluate(() => {
    const data = JSON.parse(document.getElementById("profile-data").textContent);
    const s = data.strings, f = data.functions, calls = {}, totals = {};
    for (let i = 0; i < data.nodes.length / 6; i++) {
      const ref = data.nodes[i * 6];
      if (ref < 0) continue;
      const name = s[f[ref * 6]];
      calls[name] = (calls[name] || 0) + data.nodes[i * 6 + 1];
      totals[name] = (totals[name] || 0) + data.nodes[i * 6 + 4];
    }
    return { calls, totals, rootTotal: data.nodes[4], header: document.getElementById("profile-header").textContent, origin: performance.timeOrigin };
  });
}

/**
 * Waits for the iframe `id` to hold a drawn flame graph whose data passes `check`; returns the frame and its data,
 * read in one go (the page reloads itself: a frame read later may be another document).
 */
async function loadedGraph(page, id, check = () => true) {
  return until(async () => {
    try {
      const frame = await (await page.locator(`#${id}`).elementHandle()).contentFrame();
      if (!frame || !frame.url().includes(id === "flame" ? "/flamegraph" : "/diff")) return null;
      if (!(await frame.evaluate(() => !!(window.flameGraph && window.flameGraph.visibleFrames().length > 0)))) return null;
      const data = await graphData(frame);
      return check(data, frame) ? { frame, data } : null;
    } catch (error) {
      if (/destroyed|detached|navigat/i.test(error.message)) return null; // reloaded while read: read the next one
      throw error;
    }
  }, `the ${id} graph`);
}

const pad = (n) => String(n).padStart(2, "0");
const localInput = (ms) => { const d = new Date(ms); return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`; };

test("the process appears, its flame graph refreshes with new counts, and the range selector changes the totals", async () => {
  const { context, page, problems } = await openUi();
  try {
    const row = page.locator(`#processes tr[data-pid="${program.pid}"]`);
    await row.waitFor({ timeout: 30000 });
    assert.match(await row.textContent(), /live_program.*running.*full/);

    await page.locator("#refresh").selectOption("2");
    await row.click();
    assert.equal(await page.locator("#target").inputValue(), `pid:${program.pid}`);
    const { data: before } = await loadedGraph(page, "flame", (data) => (data.calls.render_catalog ?? 0) > 0);
    // The page reloads itself every 2 s: a later graph of the same range has more calls of the same function since start.
    await page.locator("#range").selectOption("start");
    const { data: firstSinceStart } = await loadedGraph(page, "flame", (data, frame) => frame.url().endsWith(`pid=${program.pid}`));
    // Later, and covering more than twice the window below (the program's single thread: root total = its age).
    const { data: later } = await loadedGraph(page, "flame", (data) => data.calls.render_catalog > firstSinceStart.calls.render_catalog
      && data.rootTotal > 8e9);
    assert.ok(later.calls.render_item > firstSinceStart.calls.render_item);
    assert.ok(before.calls.render_item > 0);

    // A 2-second window holds less time than everything since start.
    const now = Date.now();
    await page.locator("#refresh").selectOption("0");
    await page.locator("#range").selectOption("custom");
    await page.locator("#from").fill(localInput(now - 3000));
    await page.locator("#to").fill(localInput(now - 1000));
    await page.locator("#to").dispatchEvent("change");
    const { data: windowed } = await loadedGraph(page, "flame", (data, frame) => frame.url().includes("&from="));
    assert.ok(windowed.rootTotal > 0 && windowed.rootTotal <= 3.5e9, `a 2 s window holds ${windowed.rootTotal} ns`);
    assert.ok(windowed.calls.render_catalog < later.calls.render_catalog);
    assert.match(await page.locator("#view-info").textContent(), /between…/);
    await page.screenshot({ path: join(generated, "live-ui.png"), fullPage: false });
    assert.deepEqual(problems, []);
  } finally {
    await context.close();
  }
});

test("the exception groups show their notes, chain and fates", async () => {
  const { context, page, problems } = await openUi();
  try {
    await page.locator(`#processes tr[data-pid="${program.pid}"]`).click();
    await page.locator("#tab-exceptions").click();
    const group = page.locator(".group", { hasText: "ValueError" });
    await group.waitFor({ timeout: 30000 });
    const text = await group.textContent();
    assert.match(text, /builtins\.ValueError · [\d,]+/);
    assert.match(text, /handled [\d,]+/);
    assert.match(text, /the catalogue was rendered without prices/);
    assert.match(text, /no price for sku-1/);
    await group.locator("summary").click();
    const traceback = await group.locator("pre").textContent();
    assert.match(traceback, /KeyError: 'sku-1'/);
    assert.match(traceback, /The above exception was the direct cause of the following exception/);
    assert.deepEqual(problems, []);
  } finally {
    await context.close();
  }
});

test("comparing the ranges before and after the switch marks the new function as new and the old one as gone", async () => {
  const { context, page, problems } = await openUi();
  try {
    const switchedAt = Date.now();
    writeFileSync(flag, "");
    await until(() => program.lines.includes("phase b"), "the program's second phase");
    const phaseB = Date.now();
    // The agent's buckets cover a few seconds of phase B (1 s buckets; the range picks whole ones, so it starts a
    // bucket after the switch).
    await until(async () => {
      const processes = await page.evaluate(() => fetch("/api/processes").then((r) => r.json()).then((j) => j.processes));
      const p = processes.find((p) => Number(p.pid) === program.pid);
      return Number(p.historyEndUnixNs) / 1e6 > phaseB + 4500;
    }, "the agent's buckets of phase B");

    await page.locator("#tab-diff").click();
    await page.locator("#diff-a-target").selectOption(`pid:${program.pid}`);
    await page.locator("#diff-b-target").selectOption(`pid:${program.pid}`);
    await page.locator("#diff-a-from").fill(localInput(switchedAt - 5000));
    await page.locator("#diff-a-to").fill(localInput(switchedAt - 1000));
    await page.locator("#diff-b-from").fill(localInput(phaseB + 2500));
    await page.locator("#diff-b-to").fill(localInput(Date.now()));
    await page.locator("#diff-run").click();
    const { frame: diff } = await loadedGraph(page, "diff");
    const frames = await diff.evaluate(() => window.flameGraph.visibleFrames());
    assert.ok(await diff.evaluate(() => window.flameGraph.isDifferential));
    const changeOf = (name) => frames.find((frame) => frame.label.startsWith(name + " ("))?.change;
    assert.equal(changeOf("compress_images"), "new");
    assert.equal(changeOf("compress_block"), "new");
    assert.equal(changeOf("render_catalog"), "gone");
    assert.match(await diff.locator("#profile-header").textContent(), /^differential · /);
    // The tooltip says so too.
    const target = frames.find((frame) => frame.label.startsWith("compress_images ("));
    await diff.locator("#flamegraph").hover({ position: { x: target.x + Math.min(target.width / 2, 20), y: target.y + target.height / 2 } });
    await diff.locator("#tooltip").waitFor({ state: "visible" });
    assert.match(await diff.locator("#tooltip").innerText(), /Change\s+new \(only in the comparison\)/);
    await page.screenshot({ path: join(generated, "live-ui-diff.png"), fullPage: false });
    assert.deepEqual(problems, []);
  } finally {
    await context.close();
  }
});

test("first paint of the UI's flame graph of a live process with 60,000 stacks (printed)", async () => {
  const wide = shimmed("wide_program.py");
  await until(() => wide.lines.includes("ready"), "the wide program", 120);
  const { context, page, problems } = await openUi();
  try {
    const row = page.locator(`#processes tr[data-pid="${wide.pid}"]`);
    await row.waitFor({ timeout: 30000 });
    await page.locator("#refresh").selectOption("0");
    // The stacks were made in the last minute: the default range (last 60 s) holds them once the agent has closed a
    // bucket after the moment it was seen to have them all (events received later go into a later bucket).
    // Asked of the agent each time (the page's own list is only as fresh as its last refresh, and refreshing is off).
    const wideOf = async () => (await page.evaluate(async () => (await (await fetch("/api/processes", { cache: "no-store" })).json()).processes))
      .find((p) => Number(p.pid) === wide.pid);
    const allSeenAt = await until(async () => Number((await wideOf())?.callTreeNodes) >= 60000 && Date.now(), "the wide program's stacks", 60);
    await until(async () => Number((await wideOf()).historyEndUnixNs) / 1e6 >= allSeenAt, "the agent's buckets to hold the wide program's stacks", 60);
    const timings = [];
    for (let round = 0; round < 3; round++) {
      if (round === 0) await row.click(); else await page.locator("#reload").click();
      const { frame, data } = await loadedGraph(page, "flame", (data, f) => f.url().includes(`pid=${wide.pid}`) && !timings.some((t) => t.origin === data.origin));
      const timing = await frame.evaluate(() => ({
        nodes: window.flameGraph.nodeCount, drawn: window.flameGraph.visibleFrames().length, paint: window.flameGraph.firstPaintMs,
        answer: performance.getEntriesByType("navigation")[0].responseEnd,
      }));
      timings.push({ ...timing, origin: data.origin });
      assert.ok(timing.nodes >= 60000, `${timing.nodes} nodes`);
    }
    console.log(`live UI first paint: ${timings[0].nodes} nodes (last 60 s of a running process), ${timings[0].drawn} frames drawn; ` +
      "from the flame graph's request to its first paint: " + timings.map((t) => `${t.paint.toFixed(0)} ms (agent's answer received at ${t.answer.toFixed(0)} ms)`).join(", then ") +
      " (first load, then two refreshes)");
    assert.deepEqual(problems, []);
  } finally {
    await context.close();
    wide.stdin.end();
  }
});
