// Drives flamegraph.html in headless Chromium: loads it from file:// with every non-file request blocked,
// then checks rendering, tooltip, zoom, search, the time/calls toggle and the top-functions table against an
// independent decoding of the page's embedded data.
//
// The page under test is $FLAMEGRAPH_HTML, else the sample the xunit tests write to .generated/ (run.sh does
// both). Large-page timings are printed, never asserted.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
const generated = join(here, ".generated");
const pagePath = resolve(process.env.FLAMEGRAPH_HTML || join(generated, "sample-flamegraph.html"));
const largePagePath = join(generated, "large-flamegraph.html");
const chromiumPath = process.env.CHROMIUM || "/usr/bin/chromium";
const MATCH_COLOUR = [0xc0, 0x26, 0xd3];

let browser;

before(async () => {
  assert.ok(existsSync(pagePath), `no page at ${pagePath}: run tests/browser/run.sh or set FLAMEGRAPH_HTML`);
  mkdirSync(generated, { recursive: true });
  browser = await chromium.launch({
    executablePath: chromiumPath,
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
});

after(async () => { await browser?.close(); });

/** Opens a page with network access refused and every console error and request recorded. */
async function open(path = pagePath, viewport = { width: 1400, height: 900 }) {
  const context = await browser.newContext({ viewport, deviceScaleFactor: 1 });
  const problems = [], requests = [];
  await context.route("**/*", (route) => {
    const url = route.request().url();
    if (url.startsWith("file:") || url.startsWith("data:")) return route.continue();
    problems.push(`blocked network request: ${url}`);
    return route.abort();
  });
  const page = await context.newPage();
  page.on("request", (request) => requests.push(request.url()));
  page.on("console", (message) => { if (message.type() === "error" || message.type() === "warning") problems.push(`console ${message.type()}: ${message.text()}`); });
  page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
  const started = performance.now();
  await page.goto(pathToFileURL(path).href, { waitUntil: "load" });
  await page.waitForFunction(() => window.flameGraph && window.flameGraph.visibleFrames().length > 0);
  const loadMs = performance.now() - started;
  return { context, page, problems, requests, loadMs };
}

/** The page's embedded data decoded here, independently of the page's own script. */
async function decodeData(page) {
  const data = JSON.parse(await page.locator("#profile-data").textContent());
  const n = data.nodes.length / 6, s = data.strings, f = data.functions;
  const nodes = [];
  for (let i = 0; i < n; i++) {
    const o = i * 6, ref = data.nodes[o];
    const label = ref >= 0 ? `${s[f[ref * 6]]} (${s[f[ref * 6 + 1]]}:${f[ref * 6 + 2]})` : s[-ref - 1];
    const qualname = ref >= 0 ? s[f[ref * 6]] : label;
    nodes.push({ label, qualname, isFunction: ref >= 0, calls: data.nodes[o + 1], resumes: data.nodes[o + 2],
      self: data.nodes[o + 3], total: data.nodes[o + 4], childCount: data.nodes[o + 5], parent: -1, end: i + 1 });
  }
  const open = [];
  for (let i = 0; i < n; i++) {
    while (open.length && open[open.length - 1].left === 0) open.pop();
    if (open.length) { nodes[i].parent = open[open.length - 1].node; open[open.length - 1].left--; }
    if (nodes[i].childCount > 0) open.push({ node: i, left: nodes[i].childCount });
  }
  for (let i = n - 1; i > 0; i--) nodes[nodes[i].parent].end = Math.max(nodes[nodes[i].parent].end, nodes[i].end);
  const subtreeCalls = nodes.map((node) => node.calls);
  for (let i = n - 1; i > 0; i--) subtreeCalls[nodes[i].parent] += subtreeCalls[i];
  nodes.forEach((node, i) => { node.subtreeCalls = subtreeCalls[i]; });
  return nodes;
}

const frames = (page) => page.evaluate(() => window.flameGraph.visibleFrames());
const canvasWidth = (page) => page.evaluate(() => window.flameGraph.canvasWidth());

/** A function frame a few levels down that is wide enough to aim at but not the full width. */
function pickFrame(all, width) {
  const candidates = all.filter((fr) => fr.depth >= 3 && fr.width > 40 && fr.width < width * 0.9 && fr.label.includes("("));
  assert.ok(candidates.length > 0, "no suitable frame to interact with");
  return candidates.sort((a, b) => b.width - a.width)[0];
}

async function pointAt(page, frame) {
  const box = await page.locator("#flamegraph").boundingBox();
  return { x: box.x + frame.x + Math.min(frame.width / 2, 20), y: box.y + frame.y + frame.height / 2 };
}

function parseDuration(text) {
  const m = /^([\d.]+) (ns|µs|ms|s)$/.exec(text.trim());
  assert.ok(m, `not a duration: ${text}`);
  return Number(m[1]) * { ns: 1, "µs": 1e3, ms: 1e6, s: 1e9 }[m[2]];
}

test("loads from file:// with no errors, no network requests, and draws the frames", async () => {
  const { context, page, problems, requests } = await open();
  try {
    assert.deepEqual(problems, []);
    const foreign = requests.filter((url) => !url.startsWith("file:") && !url.startsWith("data:"));
    assert.deepEqual(foreign, [], "the page must not touch the network");

    assert.ok((await page.title()).length > 0);
    assert.match(await page.locator("#profile-header").textContent(), /\d+ process(es)? · \d+ threads? · .* on stack .* generated \d{4}-\d\d-\d\d/);

    const nodes = await decodeData(page);
    const drawn = await frames(page);
    const width = await canvasWidth(page);
    assert.ok(drawn.length >= Math.min(nodes.length, 10), `only ${drawn.length} frames drawn`);
    assert.equal(drawn[0].node, 0);
    assert.ok(Math.abs(drawn[0].width - width) < 0.5, "the root spans the whole width");
    // Widths follow total time: every child spans its share of the root.
    for (const frame of drawn.slice(1, 40)) {
      const expected = width * nodes[frame.node].total / nodes[0].total;
      assert.ok(Math.abs(frame.width - expected) < 0.01, `${frame.label}: width ${frame.width}, expected ${expected}`);
    }

    // The canvas really holds pixels: count opaque ones in the first rows.
    const painted = await page.evaluate(() => {
      const canvas = document.getElementById("flamegraph");
      const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, Math.min(canvas.height, 60)).data;
      let opaque = 0;
      for (let i = 3; i < pixels.length; i += 4) if (pixels[i] > 0) opaque++;
      return opaque / (pixels.length / 4);
    });
    assert.ok(painted > 0.5, `only ${(painted * 100).toFixed(1)}% of the top rows painted`);

    await page.screenshot({ path: join(generated, "flamegraph.png"), fullPage: true });
  } finally {
    await context.close();
  }
});

test("hovering a frame shows a tooltip with its calls and times", async () => {
  const { context, page, problems } = await open();
  try {
    const nodes = await decodeData(page);
    const frame = pickFrame(await frames(page), await canvasWidth(page));
    const node = nodes[frame.node];
    const point = await pointAt(page, frame);
    await page.mouse.move(point.x, point.y);

    const tooltip = page.locator("#tooltip");
    await tooltip.waitFor({ state: "visible" });
    const text = await tooltip.innerText();
    assert.ok(text.includes(node.qualname), `tooltip names the function: ${text}`);
    const calls = /^Calls\s+([\d,]+)$/m.exec(text);
    assert.ok(calls, `tooltip shows calls: ${text}`);
    assert.equal(Number(calls[1].replace(/,/g, "")), node.calls);
    assert.match(text, /Total\s+\S+ \S+\s+\([\d.<]+% of all, [\d.<]+% of parent\)/);
    assert.match(text, /Self\s+/);
    assert.match(text, /Resumes\s+[\d,]+/);

    await page.mouse.move(1, 1);
    await tooltip.waitFor({ state: "hidden" });
    assert.deepEqual(problems, []);
  } finally {
    await context.close();
  }
});

test("clicking a frame zooms into it; ancestors stay visible; Esc and the reset button zoom out", async () => {
  const { context, page, problems } = await open();
  try {
    const width = await canvasWidth(page);
    const frame = pickFrame(await frames(page), width);
    const point = await pointAt(page, frame);
    const resetButton = page.locator("#reset-zoom");
    assert.equal(await resetButton.isDisabled(), true);

    await page.mouse.click(point.x, point.y);
    let zoomed = await frames(page);
    const target = zoomed.find((fr) => fr.node === frame.node);
    assert.ok(target && Math.abs(target.width - width) < 0.5, `zoomed frame fills the width (${target?.width} of ${width})`);
    const ancestors = zoomed.filter((fr) => fr.depth < frame.depth);
    assert.equal(ancestors.length, frame.depth, "one ancestor per level above the zoomed frame");
    assert.ok(ancestors.every((fr) => Math.abs(fr.width - width) < 0.5));
    assert.ok(zoomed.filter((fr) => fr.depth === frame.depth).length === 1, "siblings are hidden");
    assert.equal(await resetButton.isDisabled(), false);
    assert.match(await page.locator("#status").textContent(), /Zoomed into/);

    await page.keyboard.press("Escape");
    let restored = (await frames(page)).find((fr) => fr.node === frame.node);
    assert.ok(Math.abs(restored.width - frame.width) < 0.01, "Esc restores the whole profile");

    await page.mouse.click(point.x, point.y);
    await resetButton.focus();
    await page.keyboard.press("Enter");
    restored = (await frames(page)).find((fr) => fr.node === frame.node);
    assert.ok(Math.abs(restored.width - frame.width) < 0.01, "the reset button (via keyboard) restores the whole profile");
    assert.equal(await resetButton.isDisabled(), true);
    assert.deepEqual(problems, []);
  } finally {
    await context.close();
  }
});

test("the graph can be explored and zoomed with the keyboard alone", async () => {
  const { context, page, problems } = await open();
  try {
    const nodes = await decodeData(page);
    await page.locator("#flamegraph").focus();
    for (let i = 0; i < 4; i++) await page.keyboard.press("ArrowDown");
    const tooltip = page.locator("#tooltip");
    await tooltip.waitFor({ state: "visible" });
    await page.keyboard.press("ArrowRight");
    await page.keyboard.press("ArrowLeft");
    // Four levels down the widest path from the root: the first drawn frame at depth 4.
    const expected = (await frames(page)).find((fr) => fr.depth === 4);
    assert.ok((await tooltip.innerText()).includes(nodes[expected.node].qualname));

    await page.keyboard.press("Enter");
    assert.equal(await page.evaluate(() => window.flameGraph.zoomedLabel()), expected.label);
    await page.keyboard.press("ArrowUp");
    await page.keyboard.press("Enter");
    assert.equal(await page.evaluate(() => window.flameGraph.zoomedLabel()), nodes[nodes[expected.node].parent].label);
    await page.keyboard.press("Escape");
    assert.equal(await page.evaluate(() => window.flameGraph.zoomedLabel()), nodes[0].label);
    assert.deepEqual(problems, []);
  } finally {
    await context.close();
  }
});

test("search highlights matching frames and reports their share of time", async () => {
  const { context, page, problems } = await open();
  try {
    const nodes = await decodeData(page);
    const frame = pickFrame(await frames(page), await canvasWidth(page));
    const query = nodes[frame.node].qualname;

    await page.keyboard.press("/");
    assert.equal(await page.evaluate(() => document.activeElement.id), "search", "'/' focuses the search box");
    await page.keyboard.type(query);
    const info = page.locator("#match-info");

    // Expected share: matching subtrees counted once, nested matches not again.
    const needle = query.toLowerCase();
    let matchedTime = 0, coveredUntil = 0, matchedFrames = 0;
    nodes.forEach((node, i) => {
      if (!node.label.toLowerCase().includes(needle)) return;
      matchedFrames++;
      if (i >= coveredUntil) { matchedTime += node.total; coveredUntil = node.end; }
    });
    // The search runs 80 ms after the last keystroke: on a slow machine a prefix of the query may be shown
    // first, so wait for the figure of the whole query (its frame count) before comparing.
    await page.waitForFunction((count) => document.getElementById("match-info").textContent.endsWith(`(${count} frames)`),
      matchedFrames.toLocaleString("en-US"));
    const shown = /^([\d.]+)% of time in matches/.exec(await info.textContent());
    assert.ok(shown, await info.textContent());
    assert.ok(Math.abs(Number(shown[1]) - 100 * matchedTime / nodes[0].total) < 0.1, `${shown[1]}% vs ${100 * matchedTime / nodes[0].total}%`);

    const drawn = await frames(page);
    const highlighted = drawn.filter((fr) => fr.matched);
    assert.ok(highlighted.length > 0);
    assert.ok(highlighted.every((fr) => fr.label.toLowerCase().includes(needle)));
    const colour = await page.evaluate(([x, y]) => Array.from(document.getElementById("flamegraph").getContext("2d").getImageData(x, y, 1, 1).data),
      [Math.floor(highlighted[0].x + 1), Math.floor(highlighted[0].y + 2)]);
    assert.deepEqual(colour.slice(0, 3), MATCH_COLOUR, "matches are painted in the highlight colour");

    await page.locator("#search-regex").check();
    await page.locator("#search").fill("([");
    await page.waitForFunction(() => document.getElementById("search").getAttribute("aria-invalid") === "true");
    assert.equal(await info.textContent(), "invalid regex");
    await page.locator("#search").fill("^(?!x)x$");
    await page.waitForFunction(() => document.getElementById("match-info").textContent === "no matches");

    await page.locator("#search").fill("");
    await page.waitForFunction(() => document.getElementById("match-info").textContent === "");
    assert.ok((await frames(page)).every((fr) => !fr.matched));
    assert.deepEqual(problems, []);
  } finally {
    await context.close();
  }
});

test("the time/calls toggle re-weights the widths", async () => {
  const { context, page, problems } = await open();
  try {
    const nodes = await decodeData(page);
    const width = await canvasWidth(page);
    const byTime = await frames(page);
    assert.ok(nodes[0].subtreeCalls > 0, "the profile has calls");

    await page.locator("#weight-calls").click();
    assert.equal(await page.locator("#weight-calls").getAttribute("aria-pressed"), "true");
    const byCalls = await frames(page);
    for (const frame of byCalls.slice(1, 40)) {
      const expected = width * nodes[frame.node].subtreeCalls / nodes[0].subtreeCalls;
      assert.ok(Math.abs(frame.width - expected) < 0.01, `${frame.label}: width ${frame.width}, expected ${expected}`);
    }
    const widthOf = (list, node) => list.find((fr) => fr.node === node)?.width ?? 0;
    const changed = byCalls.filter((fr) => Math.abs(widthOf(byTime, fr.node) - fr.width) > 1);
    assert.ok(changed.length > 0, "some frame changed width");

    await page.locator("#weight-time").click();
    const back = await frames(page);
    assert.ok(back.slice(0, 40).every((fr) => Math.abs(widthOf(byTime, fr.node) - fr.width) < 0.01));
    assert.deepEqual(problems, []);
  } finally {
    await context.close();
  }
});

test("the top-functions table is sorted by self time and a row click searches for it", async () => {
  const { context, page, problems } = await open();
  try {
    const nodes = await decodeData(page);
    const rows = page.locator("#top-functions tbody tr");
    await rows.first().waitFor(); // the table is filled right after the graph's first paint
    const count = await rows.count();
    assert.ok(count > 0);
    const selfTimes = [];
    for (let i = 0; i < count; i++) selfTimes.push(parseDuration(await rows.nth(i).locator("td").nth(3).textContent()));
    for (let i = 1; i < selfTimes.length; i++) assert.ok(selfTimes[i] <= selfTimes[i - 1], `row ${i + 1} is out of order`);

    // The first row is the function with the most self time, summed over every frame with its label.
    const selfByLabel = new Map();
    for (const node of nodes) if (node.isFunction) selfByLabel.set(node.label, (selfByLabel.get(node.label) ?? 0) + node.self);
    const [topLabel, topSelf] = [...selfByLabel].sort((a, b) => b[1] - a[1])[0];
    assert.equal(await rows.first().locator("td").nth(1).textContent(), nodes.find((n) => n.label === topLabel).qualname);
    assert.ok(Math.abs(selfTimes[0] - topSelf) / topSelf < 0.01);

    await rows.first().locator("button").focus();
    await page.keyboard.press("Enter");
    assert.equal(await page.locator("#search").inputValue(), topLabel);
    await page.waitForFunction(() => /of time in matches/.test(document.getElementById("match-info").textContent));
    assert.ok((await frames(page)).some((fr) => fr.matched && fr.label === topLabel));
    assert.deepEqual(problems, []);
  } finally {
    await context.close();
  }
});

test("the layout follows the window width and flips between icicle and flame", async () => {
  const { context, page, problems } = await open(pagePath, { width: 800, height: 700 });
  try {
    const narrow = await canvasWidth(page);
    await page.setViewportSize({ width: 1600, height: 700 });
    await page.waitForFunction((before) => window.flameGraph.canvasWidth() > before + 500, narrow);
    const wide = await frames(page);
    assert.ok(Math.abs(wide[0].width - await canvasWidth(page)) < 0.5);

    const rootRowIcicle = wide[0].y;
    await page.locator("#layout-flame").click();
    const flame = await frames(page);
    const deepest = Math.max(...flame.map((fr) => fr.depth));
    assert.equal(rootRowIcicle, 0);
    assert.equal(flame[0].y, deepest * flame[0].height, "in flame layout the root is the bottom row");
    assert.deepEqual(problems, []);
  } finally {
    await context.close();
  }
});

test("a 60k-node profile renders (timings printed)", { skip: !existsSync(largePagePath) && "no large sample page" }, async () => {
  const { context, page, problems, loadMs } = await open(largePagePath);
  try {
    const nodeCount = await page.evaluate(() => window.flameGraph.nodeCount);
    const drawn = await frames(page);
    const timings = await page.evaluate(() => {
      const time = (action) => { const t = performance.now(); action(); return performance.now() - t; };
      const calls = time(() => document.getElementById("weight-calls").click());
      const back = time(() => document.getElementById("weight-time").click());
      const input = document.getElementById("search");
      input.value = "component_1";
      const search = time(() => document.getElementById("search-regex").dispatchEvent(new Event("change")));
      return { calls, back, search };
    });
    const frame = pickFrame(drawn, await canvasWidth(page));
    const point = await pointAt(page, frame);
    const zoomStart = performance.now();
    await page.mouse.click(point.x, point.y);
    const zoomMs = performance.now() - zoomStart;
    console.log(`large page: ${nodeCount} nodes, ${drawn.length} frames drawn; load+first paint ${loadMs.toFixed(0)} ms; ` +
      `toggle to calls ${timings.calls.toFixed(1)} ms, back ${timings.back.toFixed(1)} ms; search ${timings.search.toFixed(1)} ms; ` +
      `zoom click round trip ${zoomMs.toFixed(0)} ms`);
    assert.ok(nodeCount >= 60000);
    assert.ok(drawn.length > 100 && drawn.length < nodeCount, "narrow frames are collapsed, not all drawn");
    await page.screenshot({ path: join(generated, "flamegraph-large.png") });
    assert.deepEqual(problems, []);
  } finally {
    await context.close();
  }
});
