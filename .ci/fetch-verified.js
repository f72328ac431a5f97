// node fetch-verified.js URL SHA512 OUT: download URL to OUT if its sha512 (base64, as in
// npm's "integrity") is SHA512, else exit 1 with one line.  Used by .ci/image to put the
// registry's npm into the node base with node alone (no curl in a Debian minbase).
const [url, want, out] = process.argv.slice(2);
fetch(url)
  .then(async (response) => {
    if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
    const body = Buffer.from(await response.arrayBuffer());
    const got = require("crypto").createHash("sha512").update(body).digest("base64");
    if (got !== want) throw new Error(`${url}: sha512 ${got}, expected ${want}`);
    require("fs").writeFileSync(out, body);
  })
  .catch((error) => {
    console.error(`fetch-verified: ${error.message}`);
    process.exit(1);
  });
