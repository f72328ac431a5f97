// Drives Debian's chromium through the room server's speaker page like a person would:
// fill name, room and token, Join, wait, Mute, wait, Leave. Prints one line per step
// (JOINED, MUTED, LEFT) so the Python test can follow. Exit 0 only if every step worked.
// usage: node speaker_page.mjs PAGE_URL ROOM IDENTITY TOKEN WAV HOLD_MS
import { chromium } from "playwright-core";

const [pageUrl, room, identity, token, wav, holdMs] = process.argv.slice(2);
const hold = Number(holdMs);
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
let ok = false;
try {
  const page = await browser.newPage();
  page.on("console", (msg) => console.error("page:", msg.text()));
  page.on("pageerror", (err) => console.error("page error:", err.message));
  await page.goto(pageUrl);
  await page.fill("#identity", identity);
  await page.fill("#room", room);
  await page.fill("#token", token);
  await page.click("#join");
  await page.waitForFunction(() => document.querySelector("#status").textContent.startsWith("Joined"), null, { timeout: 20000 });
  console.log("JOINED");
  await page.waitForTimeout(hold);
  await page.click("#mute");
  await page.waitForFunction(() => document.querySelector("#mute").textContent === "Unmute");
  console.log("MUTED");
  await page.waitForTimeout(2000);
  await page.click("#leave");
  await page.waitForFunction(() => document.querySelector("#status").textContent === "Disconnected: left");
  console.log("LEFT");
  ok = true;
} catch (err) {
  console.error("speaker_page.mjs:", err.message);
} finally {
  await browser.close();
}
process.exit(ok ? 0 : 1);
