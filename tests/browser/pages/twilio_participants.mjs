// Headless Chromium participants running twilio-video.js, driven line by line from stdin.
// usage: node twilio_participants.mjs BASE_URL WAV
// stdin, one JSON per line: {"id": "a", "op": "join"|"disable"|"enable"|"leave"|"eval", ...}
//   join: {"token", "room", "wsServer", "options"?}; each id is its own browser context.
// stdout, one JSON per line: {"id", "event": ..., ...} for SDK events, {"id", "reply": ...}
// for each command's result. Exits when stdin closes.
import { chromium } from "playwright-core";
import readline from "node:readline";

const [baseUrl, wav] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
    `--use-file-for-fake-audio-capture=${wav}`,
    "--autoplay-policy=no-user-gesture-required",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
  ],
});
const pages = new Map();
const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

async function pageFor(id) {
  if (pages.has(id)) return pages.get(id);
  const context = await browser.newContext();
  // offline by design: anything not on loopback is refused and reported (the SDK must not
  // need Twilio's hosts: no insights, no ICE-server fetch, no region lookup)
  const local = (url) => /^(https?|wss?):\/\/(127\.0\.0\.1|localhost)(:\d+)?\//.test(url);
  await context.route("**/*", (route) => {
    const url = route.request().url();
    if (local(url) || url.startsWith("data:") || url.startsWith("blob:")) return route.continue();
    out({ id, event: "external", url });
    return route.abort();
  });
  const page = await context.newPage();
  page.on("websocket", (ws) => { if (!local(ws.url())) out({ id, event: "external", url: ws.url() }); });
  page.on("console", (msg) => console.error(`${id} console:`, msg.text()));
  page.on("pageerror", (err) => console.error(`${id} page error:`, err.message));
  await page.exposeFunction("emit", (text) => out(Object.assign({ id }, JSON.parse(text))));
  await page.goto(`${baseUrl}/twilio-harness/index.html`);
  if (process.env.SDK_LOG) await page.evaluate((l) => { Twilio.Video.Logger.getLogger("twilio-video").setLevel(l); }, process.env.SDK_LOG);
  pages.set(id, page);
  return page;
}

const rl = readline.createInterface({ input: process.stdin });
const pending = [];
rl.on("line", (line) => {
  pending.push((async () => {
    const cmd = JSON.parse(line);
    try {
      const page = await pageFor(cmd.id);
      let reply;
      if (cmd.op === "join") {
        reply = await page.evaluate(([t, r, w, o]) => window.join(t, r, w, o), [cmd.token, cmd.room, cmd.wsServer, cmd.options || {}]);
      } else if (cmd.op === "disable" || cmd.op === "enable") {
        reply = await page.evaluate((on) => window.setEnabled(on), cmd.op === "enable");
      } else if (cmd.op === "leave") {
        reply = await page.evaluate(() => window.leave());
      } else if (cmd.op === "eval") {
        // an app's own call, e.g. publishing a camera later: {"expr": "async () => ..."}
        reply = await page.evaluate(`(${cmd.expr})()`);
      } else if (cmd.op === "close") {
        await page.context().close();
        pages.delete(cmd.id);
        reply = true;
      } else {
        reply = { error: { message: `unknown op ${cmd.op}` } };
      }
      out({ id: cmd.id, op: cmd.op, reply });
    } catch (err) {
      out({ id: cmd.id, op: cmd.op, reply: { error: { message: err.message } } });
    }
  })());
});
await new Promise((resolve) => rl.on("close", resolve));
await Promise.allSettled(pending);
await browser.close();
