// Opens profile.speedscope.json in the real speedscope viewer (the npm package's release build, served on
// 127.0.0.1) in headless Chromium, and checks that it imports as a speedscope file with every profile; then
// profile.pb.gz (pprof) from the same run, which must import as pprof with wall time and our frame names.
//
// The files under test are $SPEEDSCOPE_JSON and $PPROF_GZ (run.sh passes those of a real run).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { existsSync, readFileSync } from "node:fs";
import { dirname, extname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
const viewer = join(here, "node_modules", "speedscope", "dist", "release");
const profilePath = process.env.SPEEDSCOPE_JSON ? resolve(process.env.SPEEDSCOPE_JSON) : "";
const pprofPath = process.env.PPROF_GZ ? resolve(process.env.PPROF_GZ) : "";
const contentTypes = { ".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".json": "application/json", ".wasm": "application/wasm" };

let browser, server, origin;

before(async () => {
  assert.ok(profilePath && existsSync(profilePath), `set SPEEDSCOPE_JSON to a profile.speedscope.json (got '${profilePath}')`);
  server = http.createServer((request, response) => {
    const path = new URL(request.url, "http://localhost").pathname;
    const file = path === "/profile.speedscope.json" ? profilePath
      : path === "/profile.pb.gz" ? pprofPath
      : join(viewer, path === "/" ? "index.html" : path);
    if (!file.startsWith(viewer) && file !== profilePath && file !== pprofPath || !existsSync(file)) {
      response.writeHead(404);
      return response.end();
    }
    response.writeHead(200, { "content-type": contentTypes[extname(file)] ?? "application/octet-stream" });
    response.end(readFileSync(file));
  });
  await new Promise((ready) => server.listen(0, "127.0.0.1", ready));
  origin = `http://127.0.0.1:${server.address().port}`;
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
});

after(async () => {
  await browser?.close();
  server?.close();
});

test("the real speedscope viewer imports the file as speedscope JSON, with every profile", async () => {
  const file = JSON.parse(readFileSync(profilePath, "utf8"));
  const page = await browser.newPage({ viewport: { width: 1280, height: 720 } });
  const messages = [], errors = [];
  page.on("console", (message) => messages.push(message.text()));
  page.on("pageerror", (error) => errors.push(error.message));
  await page.goto(`${origin}/index.html#profileURL=${encodeURIComponent(`${origin}/profile.speedscope.json`)}`);

  const first = file.profiles[0].name;
  await page.waitForFunction((name) => document.body.innerText.includes(name), first, { timeout: 30000 });
  assert.deepEqual(errors, []);
  assert.ok(messages.includes("Importing as speedscope json file"), `speedscope did not recognise the format: ${messages.join(" | ")}`);
  assert.equal(await page.title(), `${file.name} - speedscope`);
  const toolbar = await page.locator("body").innerText();
  assert.ok(toolbar.includes(`${first} (1/${file.profiles.length})`), `toolbar: ${toolbar.slice(0, 300)}`);
  await page.screenshot({ path: join(here, ".generated", "speedscope.png") });
  await page.close();
});

test("the real speedscope viewer imports profile.pb.gz as pprof, wall time first, with our frame names",
  { skip: !(pprofPath && existsSync(pprofPath)) && "PPROF_GZ not set" }, async () => {
    // The heaviest self-time frame of the run, as profile.folded (next to the pprof file) names it.
    const folded = readFileSync(join(dirname(pprofPath), "profile.folded"), "utf8").trim().split("\n")
      .map((line) => { const space = line.lastIndexOf(" "); return [line.slice(0, space).split(";").at(-1), Number(line.slice(space + 1))]; });
    const selfByFrame = new Map();
    for (const [frame, weight] of folded) selfByFrame.set(frame, (selfByFrame.get(frame) ?? 0) + weight);
    const heaviest = [...selfByFrame].sort((a, b) => b[1] - a[1])[0][0];

    const page = await browser.newPage({ viewport: { width: 1280, height: 720 } });
    const messages = [], errors = [];
    page.on("console", (message) => messages.push(message.text()));
    page.on("pageerror", (error) => errors.push(error.message));
    await page.goto(`${origin}/index.html#profileURL=${encodeURIComponent(`${origin}/profile.pb.gz`)}`);
    await page.waitForFunction(() => document.body.innerText.includes("profile.pb.gz"), null, { timeout: 30000 });
    assert.deepEqual(errors, []);
    assert.ok(messages.includes("Importing as protobuf encoded pprof file"), `speedscope did not read pprof: ${messages.join(" | ")}`);

    // The sandwich view (key 3) lists functions as text, heaviest self time first.
    await page.keyboard.press("3");
    await page.waitForFunction((name) => document.body.innerText.includes(name), heaviest, { timeout: 30000 });
    await page.screenshot({ path: join(here, ".generated", "speedscope-pprof.png") });
    await page.close();
  });
