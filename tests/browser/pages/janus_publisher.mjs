// Drive headless Chromium (Debian's, via playwright-core) as a Janus publisher.
// usage: node janus_publisher.mjs <page url> <tone.wav> <chromium path>
// Prints "PUBLISHED <feed id>" once media flows to Janus, "FAILED <why>" on error,
// then keeps the page open until stdin closes (the test's way to make it leave).
import { chromium } from "playwright-core";

const [pageUrl, wav, executablePath] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath,
  headless: true,
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
    `--use-file-for-fake-audio-capture=${wav}`,
  ],
});
let code = 0;
try {
  const page = await browser.newPage();
  page.on("console", (m) => console.log("console:", m.text()));
  await page.goto(pageUrl);
  const handle = await page.waitForFunction(
    () => window.janusState && (window.janusState.feed !== null || window.janusState.error !== null)
      ? window.janusState : null,
    null, { timeout: 40000 });
  const state = await handle.jsonValue();
  if (state.error) {
    console.log("FAILED", state.error, state.log.join(" | "));
    code = 1;
  } else {
    console.log("PUBLISHED", state.feed);
    await new Promise((resolve) => {
      process.stdin.on("end", resolve);
      process.stdin.on("close", resolve);
      process.stdin.resume();
    });
  }
} catch (e) {
  console.log("FAILED", String(e));
  code = 1;
} finally {
  await browser.close();
}
process.exit(code);
