// Browser end-to-end test of the Portcullis dashboard: Debian's headless Chromium driven by playwright-core.
// Run by tests/dashboard.rs, which starts `portcullis serve`, creates zone `localhost` with hostnames `localhost`,
// `app.localhost`, `byo.localhost` and `open.localhost`, and passes (the script also runs `openssl` to make a CA, a CRL
// and a server certificate, and `curl` to present the client certificate made in the wizard to the edge):
//   PORTCULLIS_ADMIN_URL   http://127.0.0.1:PORT of the admin listener
//   PORTCULLIS_EDGE_PORT   the edge's TLS port
//   PORTCULLIS_TOKEN       an API token with write scope
//   PORTCULLIS_DATA_DIR    the server's data directory (for edge-dev-ca.pem)
//   PORTCULLIS_SCREENSHOTS where to save one PNG per page
//   PORTCULLIS_CHROMIUM    the browser executable (default /usr/bin/chromium)
// Exits 0 when every step passed.

import assert from "node:assert/strict";
import fs from "node:fs";
import { spawnSync } from "node:child_process";
import https from "node:https";
import os from "node:os";
import path from "node:path";
import { chromium } from "playwright-core";

const env = (name, fallback) => {
  const value = process.env[name] ?? fallback;
  if (value === undefined) throw new Error(`${name} is not set`);
  return value;
};
const base = env("PORTCULLIS_ADMIN_URL");
const edgePort = Number(env("PORTCULLIS_EDGE_PORT"));
const token = env("PORTCULLIS_TOKEN");
const dataDir = env("PORTCULLIS_DATA_DIR");
const origin = env("PORTCULLIS_ORIGIN");
const shots = env("PORTCULLIS_SCREENSHOTS", path.resolve("../target/dashboard-screenshots"));
const executablePath = env("PORTCULLIS_CHROMIUM", "/usr/bin/chromium");
fs.mkdirSync(shots, { recursive: true });
// A failure screenshot of an earlier run would mislead.
fs.rmSync(path.join(shots, "failure.png"), { force: true });

const step = (text) => console.log(`[${new Date().toISOString()}] ${text}`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const edgeCa = path.join(dataDir, "edge-dev-ca.pem");

// A request through the edge with curl, presenting `cert` and `key` (PEM files) when given.
function curlEdge(pathname, cert, key, hostname = "localhost") {
  const args = ["-sS", "--max-time", "10", "-o", "-", "-w", "\n%{http_code}", "--cacert", edgeCa,
    "--resolve", `${hostname}:${edgePort}:127.0.0.1`];
  if (cert) args.push("--cert", cert, "--key", key);
  const out = spawnSync("curl", [...args, `https://${hostname}:${edgePort}${pathname}`], { encoding: "utf8" });
  if (out.status !== 0) throw new Error(`curl ${pathname}: exit ${out.status}: ${out.stderr}`);
  const cut = out.stdout.lastIndexOf("\n");
  return { status: Number(out.stdout.slice(cut + 1)), body: out.stdout.slice(0, cut) };
}

// Repeats `request` until it answers `status` (the edge picks up a change within a moment).
async function until(what, status, request) {
  let response = null;
  for (let attempt = 0; attempt < 50; attempt += 1) {
    response = await request();
    if (response.status === status) return response;
    await sleep(100);
  }
  assert.fail(`${what}: the edge answered ${response.status} ${response.body}; expected ${status}`);
}

// A request through the edge without a client certificate, trusting the development edge CA.
function edgeGet(pathname) {
  return new Promise((resolve, reject) => {
    const req = https.request(
      {
        host: "127.0.0.1",
        port: edgePort,
        servername: "localhost",
        path: pathname,
        method: "GET",
        headers: { host: "localhost" },
        ca: fs.readFileSync(edgeCa),
        timeout: 10_000,
      },
      (res) => {
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (chunk) => (body += chunk));
        res.on("end", () => resolve({ status: res.statusCode, body }));
      },
    );
    req.on("timeout", () => req.destroy(new Error("edge request timed out")));
    req.on("error", reject);
    req.end();
  });
}

const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), "portcullis-chromium-"));
const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath,
  headless: true,
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
  ],
  acceptDownloads: true,
  viewport: { width: 1280, height: 900 },
});
context.setDefaultTimeout(15_000);
const page = context.pages()[0] ?? (await context.newPage());
const problems = [];
// Failures a step provokes on purpose, registered by that step before it provokes them: an HTTP error status of a URL
// ("Failed to load resource" in the console), or the app's own console.error of an error it showed the user. Any other
// console error, failed resource load or page error is a problem.
const provoked = [];
const provoke = (what) => provoked.push(what);
page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
page.on("console", (message) => {
  if (message.type() !== "error") return;
  const text = message.text();
  const url = message.location()?.url ?? "";
  const failed = /^Failed to load resource: the server responded with a status of (\d+)/.exec(text);
  const allowed = failed
    ? provoked.some((p) => p.status === Number(failed[1]) && p.url?.test(url))
    : provoked.some((p) => p.text?.test(text));
  if (!allowed) problems.push(`console error: ${text}${url ? ` (${url})` : ""}`);
});

const shot = async (name) => {
  await page.screenshot({ path: path.join(shots, `${name}.png`), fullPage: true });
  step(`screenshot ${name}.png`);
};
const ready = async () => {
  await page.locator('body[data-ready="true"]').waitFor();
};

// A CA of our own (openssl), with a CRL listing one revoked certificate, for the bring-your-own-CA steps.
function ownCa() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "portcullis-byoca-"));
  const openssl = (...args) => {
    const out = spawnSync("openssl", args, { cwd: dir, encoding: "utf8" });
    if (out.status !== 0) throw new Error(`openssl ${args.join(" ")}: ${out.stderr}`);
    return out.stdout;
  };
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
  openssl("req", "-x509", ...ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "30", "-subj", "/CN=E2E Corp Devices CA/O=E2E Corp",
    "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign");
  openssl("req", ...ec, "-keyout", "leaf.key", "-out", "leaf.csr", "-subj", "/CN=e2e-device");
  // X.509 v3 (with extensions), as the edge trusts only v3 certificates.
  fs.writeFileSync(path.join(dir, "leaf.ext"), "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n");
  openssl("x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "7", "-extfile", "leaf.ext",
    "-out", "leaf.pem");
  fs.writeFileSync(path.join(dir, "ca.cnf"), "[ca]\ndefault_ca = d\n[d]\ndatabase = index.txt\ncrlnumber = crlnumber\ndefault_md = sha256\ndefault_crl_days = 30\n");
  fs.writeFileSync(path.join(dir, "index.txt"), "");
  fs.writeFileSync(path.join(dir, "crlnumber"), "01\n");
  const conf = ["-config", "ca.cnf", "-keyfile", "ca.key", "-cert", "ca.pem"];
  openssl("ca", ...conf, "-revoke", "leaf.pem");
  openssl("ca", ...conf, "-gencrl", "-out", "ca.crl.pem");
  // The DER form, to upload as a binary file.
  openssl("crl", "-in", "ca.crl.pem", "-outform", "DER", "-out", "ca.crl");
  // "serial=0A1B…", as the API shows it: upper hex of the number, without leading zero bytes.
  const leafSerial = openssl("x509", "-in", "leaf.pem", "-noout", "-serial").split("=")[1].trim().replace(/^(00)+/, "");
  return {
    dir,
    leafSerial,
    pem: fs.readFileSync(path.join(dir, "ca.pem"), "utf8"),
    crl: path.join(dir, "ca.crl"),
    leaf: fs.readFileSync(path.join(dir, "leaf.pem"), "utf8"),
    leafKey: fs.readFileSync(path.join(dir, "leaf.key"), "utf8"),
  };
}

// Fails when the page is wider than the viewport (outside scrolling tables and the nav strip).
async function assertFits(what) {
  const overflow = await page.evaluate(() => {
    const width = document.documentElement.clientWidth;
    const wide = [...document.querySelectorAll("body *")]
      .filter((el) => el.getBoundingClientRect().right > width + 1 && !el.parentElement.closest(".table-wrap, nav"))
      .map((el) => `${el.tagName.toLowerCase()}#${el.id}.${el.className} ${Math.round(el.getBoundingClientRect().right)}`);
    return { scrollWidth: document.documentElement.scrollWidth, width, wide };
  });
  assert.ok(overflow.scrollWidth <= overflow.width, `${what} is wider than a phone: ${JSON.stringify(overflow)}`);
}

// Fails when the shown toast covers a control (button, link, field) of the page.
async function assertToastClear(what) {
  const covered = await page.evaluate(() => {
    const toast = document.getElementById("toast").getBoundingClientRect();
    const overlaps = (r) => r.width > 0 && r.height > 0 && r.left < toast.right && r.right > toast.left && r.top < toast.bottom && r.bottom > toast.top;
    return [...document.querySelectorAll("main button, main a, main input, main select, main textarea, header button, header select")]
      .filter((el) => overlaps(el.getBoundingClientRect()))
      .map((el) => `${el.tagName.toLowerCase()}#${el.id} ${el.textContent.trim().slice(0, 30)}`);
  });
  assert.deepEqual(covered, [], `the toast covers controls (${what})`);
}

const nav = async (name, url) => {
  await page.getByRole("navigation", { name: "Dashboard" }).getByRole("link", { name, exact: true }).click();
  await page.waitForURL(url);
  await ready();
};

let exitCode = 0;
// Files the steps write (the downloaded CA, certificate and key); removed at the end.
let work = null;
try {
  step("sign in");
  await page.goto(`${base}/dashboard`);
  assert.match(page.url(), /\/dashboard\/login$/);
  provoke({ status: 401, url: /\/dashboard\/login$/ });
  await page.getByLabel("API token").fill("pct_not-a-token");
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.locator("#login-error").waitFor();
  await shot("01-login-error");
  await page.getByLabel("API token").fill(token);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.waitForURL(`${base}/dashboard`);
  await ready();

  step("a fresh server: the first page offers to create a zone");
  await page.getByText("There is no zone yet.").waitFor();
  await shot("01a-no-zone");
  provoke({ status: 400, url: /\/client\/v4\/zones$/ });
  provoke({ text: /invalid DNS name "not a domain"/ });
  await page.getByLabel("Zone name (your domain)").fill("not a domain");
  await page.getByRole("button", { name: "Create zone" }).click();
  await page.locator("#page-error", { hasText: 'invalid DNS name "not a domain"' }).waitFor();
  await page.getByLabel("Zone name (your domain)").fill("localhost");
  await page.getByRole("button", { name: "Create zone" }).click();
  await page.waitForFunction(() => document.querySelector("#zone-picker option:checked")?.textContent === "localhost");
  await ready();
  assert.equal(await page.getByText("There is no zone yet.").count(), 0);
  {
    // The hostnames the rest of the test uses: the zone's own; a second for the wizard's "associate hostnames" step
    // and the hostname edit; a third whose clients present certificates of an uploaded CA; a fourth that never gets
    // mTLS (the mTLS rule must not cover it).
    const headers = { Authorization: `Bearer ${token}`, "Content-Type": "application/json" };
    const zones = await (await fetch(`${base}/client/v4/zones?name=localhost`, { headers })).json();
    for (const hostname of ["localhost", "app.localhost", "byo.localhost"]) {
      const response = await fetch(`${base}/client/v4/zones/${zones.result[0].id}/hostnames`, {
        method: "POST",
        headers,
        body: JSON.stringify({ hostname, origin }),
      });
      assert.equal(response.status, 201, `adding ${hostname}: ${await response.text()}`);
    }
  }
  const cookies = await context.cookies(base);
  const session = cookies.find((c) => c.name === "portcullis_session");
  assert.ok(session, "the session cookie is set");
  assert.equal(session.httpOnly, true);
  assert.equal(session.sameSite, "Strict");
  assert.equal(await page.locator("#zone-picker option:checked").textContent(), "localhost");
  assert.equal(await page.getByRole("heading", { level: 1 }).textContent(), "Overview", "the overview is the landing page");

  step("Hostnames: the fourth hostname added with the form");
  await nav("Hostnames", `${base}/dashboard/hostnames`);
  const addForm = page.locator("#hn-form");
  await addForm.getByLabel("Hostname", { exact: true }).fill("open.localhost");
  // Its first server is one nobody listens on; the real origin stands in for it.
  await addForm.getByLabel("Origin", { exact: true }).fill("http://127.0.0.1:9");
  await addForm.getByLabel("More origin servers").fill(`${origin}\n`);
  await addForm.getByLabel("Spread requests over the servers").selectOption("failover");
  await addForm.getByLabel("Health check path").fill("/healthz");
  await addForm.getByLabel("Check every (seconds)").fill("5");
  await addForm.getByLabel("Minimum TLS version").selectOption("1.3");
  await addForm.getByLabel("Speak HTTP/2 to the origin").check();
  await addForm.getByRole("button", { name: "Add hostname" }).click();
  await page.locator("#toast", { hasText: "Hostname added" }).waitFor();
  await page.locator("#hn-table tbody tr", { hasText: "open.localhost" }).waitFor();
  {
    const headers = { Authorization: `Bearer ${token}` };
    const zones = await (await fetch(`${base}/client/v4/zones?name=localhost`, { headers })).json();
    const hosts = (await (await fetch(`${base}/client/v4/zones/${zones.result[0].id}/hostnames`, { headers })).json()).result;
    const added = hosts.find((x) => x.hostname === "open.localhost");
    assert.deepEqual(
      [added.origin, added.additional_origins, added.origin_steering, added.origin_health_check, added.min_tls_version, added.origin_http2],
      ["http://127.0.0.1:9", [origin], "failover", { path: "/healthz", interval: 5, timeout: 2 }, "1.3", true],
    );
    // Back to what the rest of the test expects of it: an HTTP/1.1 origin.
    const reset = await fetch(`${base}/client/v4/zones/${zones.result[0].id}/hostnames/${added.id}`, {
      method: "PATCH",
      headers: { ...headers, "Content-Type": "application/json" },
      body: JSON.stringify({ origin_http2: false, min_tls_version: "1.2" }),
    });
    assert.equal(reset.status, 200, await reset.text());
  }
  assert.equal(await addForm.getByLabel("Speak HTTP/2 to the origin").isChecked(), false, "the form is reset");
  {
    const cell = page.locator("#hn-table tbody tr", { hasText: "open.localhost" }).locator("td").nth(1);
    await cell.getByText("failover, in this order").waitFor();
    assert.deepEqual(await cell.locator("div").allTextContents(), ["http://127.0.0.1:9", origin, "failover, in this order", "checks /healthz every 5 s"]);
    // Through the edge: the dead first server is passed over, every time.
    for (let i = 0; i < 3; i += 1) {
      const response = await until("open.localhost through its second server", 200, async () => curlEdge("/", null, null, "open.localhost"));
      assert.match(response.body, /open\.localhost/, "the origin saw the request");
    }
  }

  step("Client Certificates: download the CA certificate");
  await nav("Client Certificates", `${base}/dashboard/certificates`);
  const [caDownload] = await Promise.all([
    page.waitForEvent("download"),
    page.getByRole("button", { name: "Download CA certificate" }).click(),
  ]);
  work = fs.mkdtempSync(path.join(os.tmpdir(), "portcullis-e2e-"));
  const caFile = path.join(work, "managed-ca.pem");
  await caDownload.saveAs(caFile);
  assert.match(fs.readFileSync(caFile, "utf8"), /^-----BEGIN CERTIFICATE-----\n/, "the CA download is a PEM certificate");

  step("enable mTLS on localhost (Hosts → Edit), adding and removing a host with its ✕");
  await page.getByRole("button", { name: "Edit", exact: true }).click();
  await page.getByLabel("Add a hostname").fill("localhost");
  await page.getByRole("button", { name: "Add", exact: true }).click();
  await page.locator("#hosts-edit-list li", { hasText: "localhost" }).waitFor();
  // A name without a dot gets the zone appended.
  await page.getByLabel("Add a hostname").fill("open");
  await page.getByLabel("Add a hostname").press("Enter");
  const openChip = page.locator("#hosts-edit-list li", { hasText: "open.localhost" });
  await openChip.waitFor();
  await page.getByRole("button", { name: "Remove open.localhost" }).click();
  await openChip.waitFor({ state: "detached" });
  await page.getByRole("button", { name: "Save", exact: true }).click();
  await page.locator("#hosts-list li", { hasText: /^localhost$/ }).waitFor();
  await page.locator("#hosts-form").waitFor({ state: "hidden" });
  assert.deepEqual(await page.locator("#hosts-list li").allTextContents(), ["localhost"], "the removed host was not saved");

  step("create a certificate with a generated key, then associate a hostname");
  await page.getByRole("button", { name: "Add Certificate" }).click();
  const issuer = page.getByLabel("Certificate authority");
  await issuer.locator("option", { hasText: "issues new certificates" }).waitFor({ state: "attached" });
  assert.match(await issuer.locator("option:checked").textContent(), /issues new certificates/);
  await page.getByLabel("Private key type").selectOption("p256");
  await page.getByLabel("Common name").fill("device-1");
  await page.getByLabel("Organization (O)").fill("Example Corp");
  await page.getByLabel("Organizational unit (OU)").fill("Devices");
  await page.getByLabel("Certificate validity").selectOption("365");
  await shot("02a-add-certificate");
  await page.getByRole("button", { name: "Create", exact: true }).click();
  await page.locator("#cert-result").waitFor();
  const certificate = await page.locator("#out-cert").inputValue();
  const privateKey = await page.locator("#out-key").inputValue();
  await page.locator("#p12-none", { hasText: "typed before Create" }).waitFor();
  assert.equal(await page.getByRole("button", { name: "Download PKCS#12 bundle" }).isHidden(), true, "no password, no bundle");
  assert.match(certificate, /^-----BEGIN CERTIFICATE-----/);
  assert.match(privateKey, /-----BEGIN PRIVATE KEY-----/);
  const onAlready = page.locator("#assoc-list li", { hasText: /^localhost/ }).getByRole("checkbox");
  assert.equal(await onAlready.isChecked(), true, "localhost already has mTLS");
  assert.equal(await onAlready.isDisabled(), true);
  await page.locator("#assoc-list").getByLabel("app.localhost").check();
  await shot("02-certificate-created");

  const [certDownload] = await Promise.all([
    page.waitForEvent("download"),
    page.getByRole("button", { name: "Download certificate (PEM)" }).click(),
  ]);
  assert.equal(certDownload.suggestedFilename(), "device-1.pem");
  const downloaded = fs.readFileSync(await certDownload.path(), "utf8");
  assert.equal(downloaded, certificate, "the download is the certificate shown");
  const [keyDownload] = await Promise.all([
    page.waitForEvent("download"),
    page.getByRole("button", { name: "Download private key (PEM)" }).click(),
  ]);
  assert.equal(fs.readFileSync(await keyDownload.path(), "utf8"), privateKey);
  // The downloaded files, as a client would use them.
  const certFile = path.join(work, "device-1.pem");
  const keyFile = path.join(work, "device-1.key.pem");
  await certDownload.saveAs(certFile);
  await keyDownload.saveAs(keyFile);
  const verified = spawnSync("openssl", ["verify", "-CAfile", caFile, certFile], { encoding: "utf8" });
  assert.equal(verified.status, 0, `the downloaded CA certificate issued the certificate: ${verified.stdout}${verified.stderr}`);
  await page.getByRole("button", { name: "Enable mTLS on the selected hostnames" }).click();
  await page.locator("#assoc-status", { hasText: "mTLS enabled on app.localhost" }).waitFor();
  await page.locator("#hosts-list li", { hasText: "app.localhost" }).waitFor();
  await page.locator("#assoc-list li", { hasText: "app.localhost" }).locator(".badge", { hasText: "mTLS on" }).waitFor();
  await page.getByRole("button", { name: "Done" }).click();
  // No rule reads the certificate yet: the page says that mTLS enforces nothing so far.
  await page.locator("#page-warning", { hasText: /mTLS on app\.localhost, localhost enforces nothing yet/ }).waitFor();
  // And when the page opens again, until a rule enforces it.
  await page.reload();
  await page.locator("#page-warning", { hasText: /mTLS on app\.localhost, localhost enforces nothing yet/ }).waitFor();
  const row = page.locator("#cert-table tbody tr", { hasText: "device-1" });
  await row.locator(".badge", { hasText: "active" }).waitFor();
  await row.getByText("Example Corp / Devices").waitFor();
  await page.getByLabel("Search").fill("no-such-device");
  await page.locator("#cert-table td.empty", { hasText: "No certificate matches" }).waitFor();
  await page.getByLabel("Search").fill("Devices");
  await row.waitFor();
  await page.getByLabel("Search").fill("");

  step("a one-week certificate with a PKCS#12 bundle");
  await page.getByRole("button", { name: "Add Certificate" }).click();
  await page.getByLabel("Common name").fill("device-p12");
  assert.match(await page.locator("#cert-p12-help").textContent(), /type its password here\s+before Create/);
  // Spaces at either end are part of the password.
  await page.getByLabel("PKCS#12 password (optional)").fill(" e2e-secret ");
  await page.getByLabel("Certificate validity").selectOption("7");
  await page.getByRole("button", { name: "Create", exact: true }).click();
  await page.locator("#cert-result").waitFor();
  const [p12Download] = await Promise.all([
    page.waitForEvent("download"),
    page.getByRole("button", { name: "Download PKCS#12 bundle" }).click(),
  ]);
  assert.equal(p12Download.suggestedFilename(), "device-p12.p12");
  const p12Path = path.join(os.tmpdir(), `portcullis-e2e-${process.pid}.p12`);
  await p12Download.saveAs(p12Path);
  const p12 = fs.readFileSync(p12Path);
  assert.equal(p12[0], 0x30, "a PKCS#12 file is a DER SEQUENCE");
  assert.ok(p12.length > 500, `the bundle holds a certificate and a key (${p12.length} bytes)`);
  const pkcs12 = (password) => {
    let out = spawnSync("openssl", ["pkcs12", "-in", p12Path, "-passin", `pass:${password}`, "-nokeys"], { encoding: "utf8" });
    if (out.status !== 0) out = spawnSync("openssl", ["pkcs12", "-legacy", "-in", p12Path, "-passin", `pass:${password}`, "-nokeys"], { encoding: "utf8" });
    return out;
  };
  const parsed = pkcs12(" e2e-secret ");
  assert.equal(parsed.status, 0, `openssl reads the bundle with its password, spaces included: ${parsed.stderr}`);
  assert.match(parsed.stdout, /subject=.*CN\s*=\s*device-p12/);
  assert.notEqual(pkcs12("e2e-secret").status, 0, "the password was not trimmed");
  assert.notEqual(pkcs12("wrong").status, 0, "a wrong password does not open it");
  fs.rmSync(p12Path, { force: true });
  await page.getByRole("button", { name: "Done" }).click();
  await page.locator("#cert-table tbody tr", { hasText: "device-p12" }).waitFor();
  await shot("03-client-certificates");

  step("issuance policy: a name outside it is refused in the wizard with the policy's words, then the policy is cleared");
  await page.locator("#policy-now", { hasText: "any validity, any names" }).waitFor();
  await page.getByLabel("Longest validity in days").fill("30");
  await page.getByLabel("Allowed names").fill("cn:device-*\n\ndns:*.devices.localhost");
  await page.getByRole("button", { name: "Save policy" }).click();
  await page.locator("#policy-now", { hasText: "at most 30 days, names matching cn:device-*, dns:*.devices.localhost" }).waitFor();
  // The wizard no longer offers what the policy refuses.
  assert.equal(await page.locator("#cert-validity option[value='365']").isDisabled(), true);
  assert.equal(await page.locator("#cert-validity option[value='30']").isDisabled(), false);
  await page.locator("#toast", { hasText: "Issuance policy saved" }).waitFor();
  provoke({ status: 400, url: /\/client_certificates$/ });
  provoke({ text: /client certificate policy/ });
  await page.getByRole("button", { name: "Add Certificate" }).click();
  await page.getByLabel("Common name").fill("laptop-1");
  await page.getByLabel("Certificate validity").selectOption("30");
  await page.getByRole("button", { name: "Create", exact: true }).click();
  await page.getByText(/the name "cn:laptop-1" is not allowed by the zone's client certificate policy/).first().waitFor();
  await page.getByRole("button", { name: "Cancel" }).first().click();
  await page.getByLabel("Longest validity in days").fill("");
  await page.getByLabel("Allowed names").fill("");
  await page.getByRole("button", { name: "Save policy" }).click();
  await page.locator("#policy-now", { hasText: "any validity, any names" }).waitFor();
  {
    const auth = { Authorization: `Bearer ${token}` };
    const zid = (await (await fetch(`${base}/client/v4/zones?name=localhost`, { headers: auth })).json()).result[0].id;
    const policyNow = await (await fetch(`${base}/client/v4/zones/${zid}/portcullis/client_certificate_policy`, { headers: auth })).json();
    assert.deepEqual(policyNow.result, {}, "cleared");
  }

  step("bring your own CA: upload, associate a hostname, upload its CRL");
  const own = ownCa();
  await page.getByRole("tab", { name: "Bring your own CA" }).click();
  await page.getByLabel("Name", { exact: true }).fill("corp-devices");
  await page.getByLabel("CA certificate (PEM)").fill(own.pem);
  await page.getByRole("button", { name: "Upload", exact: true }).click();
  const byoca = page.locator("#byoca-table tbody tr", { hasText: "corp-devices" });
  await byoca.waitFor();
  assert.match(await byoca.locator("td").nth(1).textContent(), /E2E Corp Devices CA/);
  await byoca.getByRole("button", { name: "Edit hostnames" }).click();
  const hostsDialog = page.locator("#byoca-hosts-dialog");
  await hostsDialog.getByLabel("byo.localhost", { exact: true }).check();
  await hostsDialog.getByRole("button", { name: "Save hostnames" }).click();
  await hostsDialog.waitFor({ state: "hidden" });
  await byoca.locator("td.hosts-cell", { hasText: /^byo\.localhost$/ }).waitFor();
  await byoca.getByRole("button", { name: "Revocation" }).click();
  const crlDialog = page.locator("#crl-dialog");
  provoke({ status: 400, url: /\/mtls_certificates\/[^/]+\/crl$/ });
  provoke({ text: /CRL/i });
  await crlDialog.getByLabel("…or paste it (PEM)").fill("-----BEGIN X509 CRL-----\nnot a crl\n-----END X509 CRL-----");
  await crlDialog.getByRole("button", { name: "Upload CRL" }).click();
  await crlDialog.locator(".dialog-error").waitFor();
  await shot("04a-byoca-crl-refused");
  // Closed and opened again, the dialog does not show the previous error.
  await crlDialog.getByRole("button", { name: "Close" }).click();
  await byoca.getByRole("button", { name: "Revocation" }).click();
  await page.locator("#crl-dialog[open]").waitFor();
  assert.equal(await crlDialog.locator(".dialog-error").isHidden(), true, "the CRL dialog opens without the old error");
  await crlDialog.getByLabel("…or paste it (PEM)").fill("");
  await crlDialog.getByLabel("CRL file (PEM or DER)").setInputFiles(own.crl);
  await crlDialog.getByRole("button", { name: "Upload CRL" }).click();
  await crlDialog.waitFor({ state: "hidden" });
  await page.locator("#toast", { hasText: "CRL accepted: 1 revoked certificate" }).waitFor();
  await byoca.getByText(/^updated \d{4}-\d{2}-\d{2}$/).waitFor();
  // OCSP: a responder that is not http:// is refused with the reason; then hard fail with a responder of its own.
  await byoca.getByRole("button", { name: "Revocation" }).click();
  await page.locator("#crl-dialog[open]").waitFor();
  assert.equal(await crlDialog.getByLabel("Check certificates with OCSP").inputValue(), "off");
  await crlDialog.getByLabel("Check certificates with OCSP").selectOption("hard");
  await crlDialog.getByLabel("Responder URL").fill("https://ocsp.corp.example/");
  provoke({ status: 400, url: /\/mtls_certificates\/[^/]+\/ocsp$/ });
  provoke({ text: /OCSP responder URL/ });
  await crlDialog.getByRole("button", { name: "Save OCSP" }).click();
  await crlDialog.locator(".dialog-error", { hasText: "must start with http://" }).waitFor();
  await crlDialog.getByLabel("Responder URL").fill("http://ocsp.corp.example/");
  await crlDialog.getByRole("button", { name: "Save OCSP" }).click();
  await crlDialog.waitFor({ state: "hidden" });
  await page.locator("#toast", { hasText: "OCSP checks on (hard fail)" }).waitFor();
  await byoca.locator(".badge", { hasText: "OCSP hard" }).waitFor();
  await byoca.getByRole("button", { name: "Revocation" }).click();
  await page.locator("#crl-dialog[open]").waitFor();
  assert.equal(await crlDialog.getByLabel("Responder URL").inputValue(), "http://ocsp.corp.example/");
  await shot("04c-byoca-ocsp");
  // Failing closed on out-of-date CRLs: more than 30 days is refused with the reason; two hours are kept and shown;
  // then off again.
  const grace = crlDialog.getByLabel(/hours past a CRL's next update/);
  assert.equal(await grace.inputValue(), "");
  provoke({ status: 400, url: /\/mtls_certificates\/[^/]+\/crl_grace$/ });
  provoke({ text: /0 to 2592000 seconds/ });
  await grace.fill("1000");
  await crlDialog.getByRole("button", { name: "Save grace" }).click();
  await crlDialog.locator(".dialog-error", { hasText: "0 to 2592000 seconds" }).waitFor();
  await grace.fill("2");
  await crlDialog.getByRole("button", { name: "Save grace" }).click();
  await crlDialog.waitFor({ state: "hidden" });
  await page.locator("#toast", { hasText: "Certificates are refused 2 h after a CRL's next update" }).waitFor();
  await byoca.locator(".badge", { hasText: "fails closed +2 h" }).waitFor();
  await byoca.getByRole("button", { name: "Revocation" }).click();
  await page.locator("#crl-dialog[open]").waitFor();
  assert.equal(await grace.inputValue(), "2");
  await shot("04e-byoca-crl-grace");
  await grace.fill("");
  await crlDialog.getByRole("button", { name: "Save grace" }).click();
  await crlDialog.waitFor({ state: "hidden" });
  await page.locator("#toast", { hasText: "Out-of-date CRLs stay in use" }).waitFor();
  // The table is reloaded after the toast: wait for the badge to go rather than count it once.
  await byoca.locator(".badge", { hasText: "fails closed" }).waitFor({ state: "detached" });
  await byoca.getByRole("button", { name: "Revocation" }).click();
  await page.locator("#crl-dialog[open]").waitFor();
  // One certificate of the CA revoked at the edge, listed in the dialog, then taken back.
  const revocations = crlDialog.locator("#edge-revocations");
  await revocations.locator("li", { hasText: "None." }).waitFor();
  provoke({ status: 400, url: /\/mtls_certificates\/[^/]+\/revocations$/ });
  provoke({ text: /serial_number must be hex/ });
  await crlDialog.getByLabel("Certificate to revoke (PEM), or its serial number").fill("not-a-serial");
  await crlDialog.getByRole("button", { name: "Revoke certificate" }).click();
  await crlDialog.locator(".dialog-error", { hasText: "serial_number must be hex" }).waitFor();
  await crlDialog.getByLabel("Certificate to revoke (PEM), or its serial number").fill(own.leaf);
  await crlDialog.getByLabel("Note (optional)").fill("lost laptop");
  await crlDialog.getByRole("button", { name: "Revoke certificate" }).click();
  const revoked = revocations.locator(`li[data-serial="${own.leafSerial}"]`, { hasText: "lost laptop" });
  await revoked.waitFor();
  await page.locator("#toast", { hasText: "revoked at the edge" }).waitFor();
  await shot("04d-byoca-revoked-at-the-edge");
  await revoked.getByRole("button", { name: "Take back" }).click();
  await revoked.getByRole("button", { name: "Confirm take back" }).click();
  await revocations.locator("li", { hasText: "None." }).waitFor();
  await crlDialog.getByRole("button", { name: "Close" }).click();
  // A certificate for the edge to present to origins: listed apart, never as a CA.
  await page.getByLabel("Certificate name").fill("edge-to-origin");
  await page.getByLabel("Certificate, then its intermediates (PEM)").fill(own.leaf);
  await page.getByLabel("Private key (PEM)").fill(own.leafKey);
  await page.getByRole("button", { name: "Upload certificate" }).click();
  await page.locator("#toast", { hasText: "Certificate uploaded" }).waitFor();
  await page.locator("#origin-certs-table tbody tr", { hasText: "edge-to-origin" }).waitFor();
  assert.equal(await page.locator("#byoca-table tbody tr", { hasText: "edge-to-origin" }).count(), 0, "not a CA");
  await shot("04-bring-your-own-ca");
  fs.rmSync(own.dir, { recursive: true, force: true });
  // CRLs fetched from a URL: nothing listens on port 1, so the first fetch (at once) fails and says why.
  await byoca.getByRole("button", { name: "Revocation" }).click();
  await page.locator("#crl-dialog[open]").waitFor();
  await crlDialog.getByLabel("Fetch them from").fill("http://127.0.0.1:1/ca.crl");
  await crlDialog.getByRole("button", { name: "Save URLs" }).click();
  await crlDialog.waitFor({ state: "hidden" });
  await page.locator("#toast", { hasText: "CRLs will be fetched from 1 URL" }).waitFor();
  let failing = false;
  for (let attempt = 0; attempt < 30 && !failing; attempt += 1) {
    await page.reload();
    await ready();
    await page.getByRole("tab", { name: "Bring your own CA" }).click();
    await byoca.waitFor();
    failing = (await byoca.locator(".badge", { hasText: "fetch failing" }).count()) === 1;
    if (!failing) await sleep(200);
  }
  assert.ok(failing, "the failing fetch is shown");
  assert.match(await byoca.locator("td.crl-cell").textContent(), /http:\/\/127\.0\.0\.1:1\/ca\.crl: request failed/);
  await shot("04b-byoca-crl-fetch-failing");
  await byoca.getByRole("button", { name: "Revocation" }).click();
  await page.locator("#crl-dialog[open]").waitFor();
  assert.equal(await crlDialog.getByLabel("Fetch them from").inputValue(), "http://127.0.0.1:1/ca.crl");
  await crlDialog.getByLabel("Fetch them from").fill("");
  await crlDialog.getByRole("button", { name: "Save URLs" }).click();
  await page.locator("#toast", { hasText: "CRLs are no longer fetched" }).waitFor();
  await byoca.getByText(/^updated \d{4}-\d{2}-\d{2}$/).waitFor();
  await page.getByRole("tab", { name: "Managed CA" }).click();

  step("create the mTLS rule for /api");
  await page.getByRole("link", { name: "Create a mTLS rule" }).first().click();
  await page.waitForURL(`${base}/dashboard/mtls-rule`);
  await ready();
  const expression = page.getByLabel("Expression");
  await expression.fill('(http.hots eq "x")');
  await page.locator("#rule-diagnostic.bad", { hasText: "^" }).waitFor();
  assert.match(await page.locator("#rule-diagnostic").textContent(), /unknown field "http.hots"/);
  await shot("05-mtls-rule-invalid");
  // The hostnames start as the zone's mTLS hostnames, by either CA (open.localhost has none).
  const ruleHosts = page.getByLabel("Hostnames (optional, one per line)");
  assert.equal(await ruleHosts.inputValue(), "app.localhost\nbyo.localhost\nlocalhost");
  const hostsWarning = page.locator("#rule-hosts-warning");
  assert.equal(await hostsWarning.isHidden(), true);
  await ruleHosts.fill("");
  await hostsWarning.waitFor();
  assert.match(await hostsWarning.textContent(), /every hostname of the zone, including open\.localhost without mTLS/);
  await shot("05a-mtls-rule-all-hosts-warning");
  await ruleHosts.fill("app.localhost\nbyo.localhost\nlocalhost");
  await hostsWarning.waitFor({ state: "hidden" });
  // Paths are one per line: a comma belongs to the path.
  await page.getByLabel("URI paths (one per line)").fill("/api\n/v1,v2");
  assert.match(await expression.inputValue(), /path in \{"\/api" "\/v1,v2"\}/);
  await page.getByLabel("URI paths (one per line)").fill("/api");
  await page.locator("#rule-diagnostic.ok").waitFor();
  assert.equal(
    await expression.inputValue(),
    '(not cf.tls_client_auth.cert_verified or cf.tls_client_auth.cert_revoked) and http.request.uri.path in {"/api"} ' +
      'and http.host in {"app.localhost" "byo.localhost" "localhost"}',
  );
  // When the check itself fails, the editor says so in the error style, never as a green "valid".
  provoke({ status: 503, url: /\/rules\/validate$/ });
  await page.route("**/client/v4/rules/validate", (route) =>
    route.fulfill({ status: 503, contentType: "application/json", body: JSON.stringify({ success: false, errors: [{ code: 10000, message: "simulated outage" }] }) }),
  );
  await expression.press("End");
  await expression.type(" ");
  await page.locator("#rule-diagnostic.bad", { hasText: "could not be checked: simulated outage" }).waitFor();
  await page.unroute("**/client/v4/rules/validate");
  await expression.press("Backspace");
  await page.locator("#rule-diagnostic.ok").waitFor();
  await page.getByLabel("Send a custom response").check();
  await page.getByLabel("Status code (400–499)").fill("401");
  await page.getByLabel("Content type").selectOption("text/plain");
  await page.getByLabel("Body (at most 2 KiB)").fill("A client certificate is required.");
  await shot("06-mtls-rule");
  // The first rule of the zone: the GET of its (missing) ruleset answers 404 before the PUT creates it.
  provoke({ status: 404, url: /\/rulesets\/phases\/http_request_firewall_custom\/entrypoint$/ });
  await page.getByRole("button", { name: "Deploy" }).click();
  await page.waitForURL(/\/dashboard\/rules/);
  await ready();
  await page.locator("#rules-table tbody tr", { hasText: "mTLS-enforced authentication" }).waitFor();
  await shot("07-security-rules");

  step("through the edge: no certificate is blocked, the wizard's certificate passes, an unlisted host stays open");
  const blockedWith = async (status, body) => {
    const response = await until("a request without a certificate", status, () => edgeGet("/api"));
    assert.equal(response.body, body);
  };
  await blockedWith(401, "A client certificate is required.");
  const withCert = await until("the wizard's certificate on /api", 200, async () => curlEdge("/api", certFile, keyFile));
  assert.notEqual(withCert.body, "A client certificate is required.");
  const noCertCurl = curlEdge("/api");
  assert.equal(noCertCurl.status, 401, `curl without a certificate: ${noCertCurl.body}`);

  step("a second rule (a skip of rate limiting) deploys with the custom response fields hidden and invalid, is moved, then deleted");
  await nav("Create a mTLS rule", `${base}/dashboard/mtls-rule`);
  await page.getByLabel("Rule name").fill("temporary skip rule");
  await page.getByLabel("Send a custom response").check();
  await page.getByLabel("Status code (400–499)").fill("");
  await page.getByLabel("Choose action").selectOption("skip");
  await page.locator("#rule-custom-set").waitFor({ state: "hidden" });
  await page.locator("#rule-diagnostic.ok").waitFor();
  // A skip must skip something; this one exempts its requests from rate limiting and lets the rules after it run.
  await page.getByLabel("All remaining custom rules").uncheck();
  provoke({ text: /choose what the skip rule skips/ });
  await page.getByRole("button", { name: "Deploy" }).click();
  await page.locator("#page-error", { hasText: "choose what the skip rule skips" }).waitFor();
  await page.getByLabel("All rate limiting rules").check();
  await page.getByRole("button", { name: "Deploy" }).click();
  await page.waitForURL(/\/dashboard\/rules\?deployed=1/);
  await ready();
  const temporary = page.locator("#rules-table tbody tr", { hasText: "temporary skip rule" });
  await temporary.waitFor();
  assert.equal(await temporary.locator("td").first().textContent(), "2");
  assert.match(await temporary.locator("td").nth(3).textContent(), /skip\s+rate limits$/);
  await temporary.getByRole("button", { name: "Move temporary skip rule up" }).click();
  await page.locator("#rules-table tbody tr").first().filter({ hasText: "temporary skip rule" }).waitFor();
  // Focus stays on the moved rule: its "up" is now disabled, so its "down" has it.
  await page.waitForFunction(() => document.activeElement?.getAttribute("aria-label") === "Move temporary skip rule down");
  await page.keyboard.press("Enter");
  await page.locator("#rules-table tbody tr").nth(1).filter({ hasText: "temporary skip rule" }).waitFor();
  await page.waitForFunction(() => document.activeElement?.getAttribute("aria-label") === "Move temporary skip rule up");
  await temporary.getByRole("button", { name: "Delete" }).click();
  await temporary.getByRole("button", { name: "Confirm delete" }).click();
  await temporary.waitFor({ state: "detached" });
  await page.locator("#toast", { hasText: "Rule deleted" }).waitFor();
  await assertToastClear("Security rules");
  assert.equal(await page.locator("#rules-table tbody tr").count(), 1);

  step("edit the rule: name, expression (with the caret diagnostic) and custom response");
  const ruleRow = page.locator("#rules-table tbody tr", { hasText: "mTLS-enforced authentication" });
  await ruleRow.getByRole("link", { name: "Edit" }).click();
  await page.waitForURL(/\/dashboard\/mtls-rule\?edit=/);
  await ready();
  assert.equal(await page.getByRole("heading", { level: 1 }).textContent(), "Edit rule");
  assert.equal(await page.getByLabel("Rule name").inputValue(), "mTLS-enforced authentication");
  assert.equal(await page.getByLabel("Send a custom response").isChecked(), true);
  assert.equal(await page.getByLabel("Body (at most 2 KiB)").inputValue(), "A client certificate is required.");
  const original = await expression.inputValue();
  await expression.fill(`${original} and http.request.method eq`);
  await page.locator("#rule-diagnostic.bad", { hasText: "^" }).waitFor();
  await shot("07a-rule-edit-invalid");
  await expression.fill(`${original} and http.request.method eq "GET"`);
  await page.locator("#rule-diagnostic.ok").waitFor();
  await page.getByLabel("Rule name").fill("mTLS on /api (edited)");
  await page.getByLabel("Status code (400–499)").fill("403");
  provoke({ text: /at most 2 KiB/ });
  await page.getByLabel("Body (at most 2 KiB)").fill("x".repeat(2049));
  await page.locator("#rule-body-size.too-long").waitFor();
  await page.getByRole("button", { name: "Save rule" }).click();
  await page.locator("#page-error", { hasText: "at most 2 KiB" }).waitFor();
  await page.getByLabel("Body (at most 2 KiB)").fill("Edited: present your device certificate.");
  await shot("07b-rule-edit");
  await page.getByRole("button", { name: "Save rule" }).click();
  await page.waitForURL(/\/dashboard\/rules\?saved=1/);
  await ready();
  const edited = page.locator("#rules-table tbody tr", { hasText: "mTLS on /api (edited)" });
  await edited.waitFor();
  assert.match(await edited.locator("td.expr").textContent(), /http\.request\.method eq "GET"$/);
  await blockedWith(403, "Edited: present your device certificate.");
  assert.equal((await until("the wizard's certificate after the edit", 200, async () => curlEdge("/api", certFile, keyFile))).status, 200);

  step("Security events: the block is listed, filters work, and a new request appears without a reload");
  await nav("Security events", `${base}/dashboard/events`);
  const event = page.locator("#events-table tbody tr", { hasText: "GET /api" });
  await event.first().waitFor({ timeout: 20_000 });
  const cells = await event.first().locator("td").allTextContents();
  assert.equal(cells[2], "localhost");
  assert.match(cells[1], /block/);
  assert.equal(cells[5], "absent");
  assert.equal(cells[4], "127.0.0.1");
  const hostFilter = page.locator("#ev-host");
  // Waits until every listed event has `text` in column `column` (a filter's refresh is debounced).
  const allRows = (column, text) =>
    page.waitForFunction(
      ([column, text]) => {
        const rows = [...document.querySelectorAll("#events-table tbody tr[data-id]")];
        return rows.length > 0 && rows.every((r) => r.cells[column].textContent.includes(text));
      },
      [column, text],
    );
  assert.deepEqual(await hostFilter.locator("option").allTextContents(), ["Any", "app.localhost", "byo.localhost", "localhost", "open.localhost"]);
  await hostFilter.selectOption("app.localhost");
  await page.locator("#events-table td.empty", { hasText: "No security events match." }).waitFor();
  await hostFilter.selectOption("localhost");
  await event.first().waitFor();
  await page.getByLabel("Action").selectOption("log");
  await page.locator("#events-table td.empty").waitFor();
  await page.getByLabel("Action").selectOption("block");
  await allRows(1, "block");
  await page.getByLabel("Action").selectOption("");
  await page.getByLabel("mTLS status").selectOption("revoked");
  await page.locator("#events-table td.empty").waitFor();
  await page.getByLabel("mTLS status").selectOption("absent");
  await allRows(5, "absent");
  await shot("08-security-events");
  // Auto-refresh: the page is open first, then a request goes through the edge; its row appears with no reload.
  await page.evaluate(() => {
    window.e2eSamePage = true;
  });
  const before = await page.locator("#events-table tbody tr[data-id]").evaluateAll((rows) => rows.map((r) => r.dataset.id));
  await blockedWith(403, "Edited: present your device certificate.");
  await page.waitForFunction(
    (known) => [...document.querySelectorAll("#events-table tbody tr[data-id]")].some((r) => !known.includes(r.dataset.id)),
    before,
    { timeout: 15_000 },
  );
  assert.equal(await page.evaluate(() => window.e2eSamePage), true, "the new row came without a page load");
  await page.locator("#ev-announce", { hasText: /^1 new security event$/ }).waitFor();

  step("hostnames: server certificate column and editing a hostname");
  // A server certificate of our own for app.localhost, uploaded through the API (the dashboard's upload is tested
  // below).
  const serverDir = fs.mkdtempSync(path.join(os.tmpdir(), "portcullis-server-cert-"));
  const made = spawnSync("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
    "-keyout", "key.pem", "-out", "cert.pem", "-days", "20", "-subj", "/CN=app.localhost",
    "-addext", "subjectAltName=DNS:app.localhost", "-addext", "basicConstraints=critical,CA:FALSE"], { cwd: serverDir, encoding: "utf8" });
  assert.equal(made.status, 0, made.stderr);
  const authorization = { Authorization: `Bearer ${token}`, "Content-Type": "application/json" };
  const zoneId = (await (await fetch(`${base}/client/v4/zones?name=localhost`, { headers: authorization })).json()).result[0].id;
  const upload = await fetch(`${base}/client/v4/zones/${zoneId}/custom_certificates`, {
    method: "POST",
    headers: authorization,
    body: JSON.stringify({
      certificate: fs.readFileSync(path.join(serverDir, "cert.pem"), "utf8"),
      private_key: fs.readFileSync(path.join(serverDir, "key.pem"), "utf8"),
    }),
  });
  assert.equal(upload.status, 201, await upload.text());
  fs.rmSync(serverDir, { recursive: true, force: true });
  await nav("Hostnames", `${base}/dashboard/hostnames`);
  const host = page.locator("#hn-table tbody tr", { hasText: /^localhost/ });
  await host.locator(".badge", { hasText: "on" }).waitFor();
  assert.equal(await host.locator(".mtls-cas").textContent(), "managed CA");
  await host.getByText("development edge CA").waitFor();
  // A host trusted through an uploaded CA shows mTLS on, with that CA.
  const byoHost = page.locator("#hn-table tbody tr", { hasText: "byo.localhost" });
  await byoHost.locator(".badge", { hasText: /^on$/ }).waitFor();
  assert.equal(await byoHost.locator(".mtls-cas").textContent(), "corp-devices");
  const openHost = page.locator("#hn-table tbody tr", { hasText: "open.localhost" });
  assert.equal(await openHost.locator("td").nth(3).textContent(), "off");
  const app = page.locator("#hn-table tbody tr", { hasText: "app.localhost" });
  const appCert = await app.locator("td").nth(2).textContent();
  assert.match(appCert, /^app\.localhost/, "the uploaded certificate serves app.localhost");
  assert.match(appCert, /expires \d{4}-\d{2}-\d{2}/);
  assert.match(appCert, /CN=app\.localhost/, "its issuer (self-signed)");
  await app.getByRole("button", { name: "Edit" }).click();
  const hnDialog = page.locator("#hn-dialog");
  provoke({ status: 400, url: /\/hostnames\/[^/]+$/ });
  provoke({ text: /invalid origin/ });
  await hnDialog.getByLabel("Origin", { exact: true }).fill("ftp://nope");
  await hnDialog.getByRole("button", { name: "Save" }).click();
  await hnDialog.locator(".dialog-error", { hasText: "invalid origin" }).waitFor();
  // Cancelled and opened again, the dialog does not show the previous error.
  await hnDialog.getByRole("button", { name: "Cancel" }).click();
  await app.getByRole("button", { name: "Edit" }).click();
  await page.locator("#hn-dialog[open]").waitFor();
  assert.equal(await hnDialog.locator(".dialog-error").isHidden(), true, "the hostname dialog opens without the old error");
  await hnDialog.getByLabel("Origin", { exact: true }).fill("http://127.0.0.1:9");
  assert.equal(await hnDialog.getByLabel("More origin servers").inputValue(), "");
  assert.equal(await hnDialog.getByLabel("Health check path").inputValue(), "");
  await hnDialog.getByLabel("More origin servers").fill("http://127.0.0.1:10\n  \nhttp://127.0.0.1:11");
  await hnDialog.getByLabel("Client certificates").selectOption("require");
  const forward = hnDialog.getByRole("group", { name: "Forward the certificate to the origin" });
  assert.equal(await forward.locator("input:checked").count(), 0, "app.localhost forwards nothing yet");
  await forward.getByLabel("RFC 9440").check();
  await forward.getByLabel("X-Forwarded-Client-Cert with the certificate and chain").check();
  assert.deepEqual(
    await hnDialog.getByLabel("Client certificate presented to the origin").locator("option").allTextContents(),
    ["none", "edge-to-origin (O=E2E Corp,CN=E2E Corp Devices CA)"],
  );
  assert.equal(await hnDialog.getByLabel("Name the trusted CAs").isChecked(), true);
  await hnDialog.getByLabel("Name the trusted CAs").uncheck();
  assert.equal(await hnDialog.getByLabel("Minimum TLS version").inputValue(), "1.2");
  await hnDialog.getByLabel("Minimum TLS version").selectOption("1.3");
  assert.equal(await hnDialog.getByLabel("Speak HTTP/2 to the origin").isChecked(), false);
  assert.equal(await hnDialog.getByLabel("Host sent to the origin").inputValue(), "");
  await hnDialog.getByLabel("Host sent to the origin").fill("Backend.Internal");
  assert.equal(await hnDialog.getByLabel("Certificate fields as headers").inputValue(), "");
  await hnDialog.getByLabel("Certificate fields as headers").fill("X-SSL-Client-Verify: portcullis.tls_client_auth.verify_result\n\nX-Client-Spiffe: portcullis.tls_client_auth.cert_san_uri");
  await hnDialog.getByRole("button", { name: "Save" }).click();
  await hnDialog.waitFor({ state: "hidden" });
  await app.locator("td", { hasText: "http://127.0.0.1:9" }).waitFor();
  await app.locator(".host-header", { hasText: "Host: backend.internal" }).waitFor();
  assert.equal(await app.locator(".cert-headers").textContent(), "x-client-spiffe, x-ssl-client-verify");
  await page.locator("#toast", { hasText: "Hostname saved" }).waitFor();
  await assertToastClear("Hostnames");
  const appCells = await app.locator("td").allTextContents();
  assert.equal(appCells[4], "require");
  assert.equal(appCells[5], "RFC 9440, X-Forwarded-Client-Cert with the certificatex-client-spiffe, x-ssl-client-verify", "the styles, then the named headers");
  const hostsNow = (await (await fetch(`${base}/client/v4/zones/${zoneId}/hostnames`, { headers: authorization })).json()).result;
  assert.equal(hostsNow.find((x) => x.hostname === "app.localhost").send_client_ca_names, false);
  assert.equal(hostsNow.find((x) => x.hostname === "app.localhost").min_tls_version, "1.3");
  assert.equal(hostsNow.find((x) => x.hostname === "app.localhost").origin_http2, false, "left as it was");
  assert.deepEqual(hostsNow.find((x) => x.hostname === "app.localhost").additional_origins, ["http://127.0.0.1:10", "http://127.0.0.1:11"]);
  assert.equal(hostsNow.find((x) => x.hostname === "app.localhost").origin_steering, "round_robin");
  assert.equal(hostsNow.find((x) => x.hostname === "app.localhost").origin_host_header, "backend.internal");
  assert.deepEqual(hostsNow.find((x) => x.hostname === "app.localhost").client_certificate_headers, {
    "x-client-spiffe": "portcullis.tls_client_auth.cert_san_uri",
    "x-ssl-client-verify": "portcullis.tls_client_auth.verify_result",
  });
  assert.deepEqual(hostsNow.find((x) => x.hostname === "app.localhost").client_certificate_forwarding, ["rfc9440", "xfcc_cert"]);
  await shot("09-hostnames");

  step("Server certificates: upload one for app.localhost, the edge presents it, replace it, delete it");
  {
    const dir = fs.mkdtempSync(path.join(work, "server-cert-"));
    const openssl = (...args) => {
      const out = spawnSync("openssl", args, { cwd: dir, encoding: "utf8", input: "" });
      if (out.status !== 0) throw new Error(`openssl ${args.join(" ")}: ${out.stderr}`);
      return out.stdout;
    };
    for (const name of ["first", "second"]) {
      openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", `${name}.key`,
        "-out", `${name}.pem`, "-days", "30", "-subj", `/CN=e2e ${name}`, "-addext", "subjectAltName=DNS:app.localhost",
        "-addext", "basicConstraints=critical,CA:FALSE");
    }
    // The subject the edge presents for app.localhost, as openssl s_client prints it.
    const presented = () => {
      const out = spawnSync("openssl", ["s_client", "-connect", `127.0.0.1:${edgePort}`, "-servername", "app.localhost"], { encoding: "utf8", input: "" });
      return (out.stdout.match(/^subject=(.*)$/m) ?? [])[1] ?? "";
    };
    const presents = async (cn) => {
      for (let i = 0; i < 100 && !presented().includes(cn); i += 1) await sleep(100);
      assert.match(presented(), new RegExp(cn));
    };
    // The one uploaded through the API above is listed.
    await page.locator("#sc-table tbody tr", { hasText: "CN=app.localhost" }).waitFor();
    await page.getByLabel("Certificate chain (PEM: the certificate, then its intermediates)").setInputFiles(path.join(dir, "first.pem"));
    // A key that is not the certificate's: the API's error is shown.
    provoke({ status: 400, url: /\/custom_certificates$/ });
    provoke({ text: /does not match the certificate/ });
    await page.getByLabel("Private key (PEM; sealed at rest, never shown again)").setInputFiles(path.join(dir, "second.key"));
    await page.getByRole("button", { name: "Upload certificate" }).click();
    await page.locator("#page-error", { hasText: "does not match the certificate" }).waitFor();
    await page.getByLabel("Private key (PEM; sealed at rest, never shown again)").setInputFiles(path.join(dir, "first.key"));
    await page.getByRole("button", { name: "Upload certificate" }).click();
    await page.locator("#toast", { hasText: "Server certificate for app.localhost uploaded" }).waitFor();
    const certRow = page.locator("#sc-table tbody tr", { hasText: "CN=e2e first" });
    await certRow.waitFor();
    assert.equal(await certRow.locator("td").first().textContent(), "app.localhost");
    // The hostnames table names it too.
    await app.locator("td", { hasText: "CN=e2e first" }).waitFor();
    await presents("e2e first");
    await certRow.getByRole("button", { name: "Replace" }).click();
    const replace = page.locator("#sc-dialog");
    await replace.getByLabel("New certificate chain (PEM)").setInputFiles(path.join(dir, "second.pem"));
    await replace.getByLabel("Its private key (PEM)").setInputFiles(path.join(dir, "second.key"));
    await replace.getByRole("button", { name: "Replace" }).click();
    await replace.waitFor({ state: "hidden" });
    await page.locator("#toast", { hasText: "Server certificate replaced" }).waitFor();
    await presents("e2e second");
    const secondRow = page.locator("#sc-table tbody tr", { hasText: "CN=e2e second" });
    await secondRow.waitFor();
    assert.equal(await page.locator("#sc-table tbody tr").count(), 2, "replaced in place, not added");
    await shot("09a-server-certificates");
    await secondRow.getByRole("button", { name: "Delete" }).click();
    await secondRow.getByRole("button", { name: "Confirm delete" }).click();
    await secondRow.waitFor({ state: "detached" });
    // Back to the certificate uploaded through the API.
    await presents("CN = app.localhost");
    await assertToastClear("Hostnames");
  }

  step("Certificates over ACME: a wildcard is refused, an order shows the ACME server's failure, retry, remove");
  {
    // The test server's ACME directory (https://127.0.0.1:1) refuses connections: every attempt fails at once.
    const names = page.getByLabel("Names (spaces or commas between them)");
    provoke({ status: 400, url: /certificate_packs\/order$/ });
    provoke({ text: /wildcard names are validated over DNS/ });
    await names.fill("*.localhost");
    await page.getByRole("button", { name: "Order certificate" }).click();
    await page.locator("#page-error", { hasText: "dns-01" }).waitFor();
    await names.fill("app.localhost, shop.localhost");
    await page.getByRole("button", { name: "Order certificate" }).click();
    await page.locator("#toast", { hasText: "Certificate for app.localhost, shop.localhost ordered" }).waitFor();
    const packRow = page.locator("#acme-table tbody tr", { hasText: "app.localhost, shop.localhost" });
    await packRow.waitFor();
    // The failure appears once the page reloads its data (any action does); the Retry button comes with it.
    for (let i = 0; i < 50 && !(await packRow.textContent()).includes("creating an ACME account"); i += 1) {
      await sleep(200);
      await nav("Hostnames", `${base}/dashboard/hostnames`);
    }
    assert.match(await packRow.textContent(), /failing, will retry.*creating an ACME account at https:\/\/127\.0\.0\.1:1\/directory/);
    await packRow.getByRole("button", { name: "Retry now" }).click();
    await page.locator("#toast", { hasText: "Trying app.localhost, shop.localhost again now" }).waitFor();
    await shot("09b-acme");
    await packRow.getByRole("button", { name: "Remove" }).click();
    await packRow.getByRole("button", { name: "Confirm remove" }).click();
    await packRow.waitFor({ state: "detached" });
    await assertToastClear("Hostnames (ACME)");
  }

  step("Managed transforms: the zone's hostnames add the cf-cert-* headers, and the setting survives a reload");
  {
    const label = "Add TLS client auth headers (the 17 cf-cert-* headers)";
    const box = page.getByLabel(label);
    assert.equal(await box.isChecked(), false);
    await box.check();
    await page.locator("#toast", { hasText: `${label}: on` }).waitFor();
    await nav("Hostnames", `${base}/dashboard/hostnames`);
    await page.locator("#hn-table tbody tr").first().waitFor();
    assert.equal(await page.getByLabel(label).isChecked(), true, "kept");
    assert.equal(await page.getByLabel("Remove X-Powered-By from responses").isChecked(), false);
    await page.getByLabel(label).uncheck();
    await page.locator("#toast", { hasText: `${label}: off` }).waitFor();
  }

  step("DNS validation: a bad secret is named, settings saved (never shown), a wildcard ordered over DNS, removal order");
  {
    const current = page.locator("#acme-dns-current");
    await current.filter({ hasText: "None: names are validated with TLS-ALPN-01" }).waitFor();
    await page.getByLabel("Name server (host or IP, optional :port)").fill("127.0.0.1:1");
    await page.getByLabel("TSIG key name").fill("portcullis-acme");
    await page.getByLabel("Seconds to wait for secondaries (0 to 120)").fill("0");
    const secret = page.getByLabel("TSIG secret (base64)");
    provoke({ status: 400, url: /ssl\/acme_dns$/ });
    provoke({ text: /too short for a TSIG key/ });
    await secret.fill("c2hvcnQ=");
    await page.getByRole("button", { name: "Save DNS settings" }).click();
    await page.locator("#page-error", { hasText: "too short for a TSIG key" }).waitFor();
    const key = "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI=";
    await secret.fill(key);
    await page.getByRole("button", { name: "Save DNS settings" }).click();
    await page.locator("#toast", { hasText: "DNS settings saved" }).waitFor();
    await current.filter({ hasText: "Orders are validated over DNS through 127.0.0.1:1 (zone localhost), key portcullis-acme (hmac-sha256), 0 s" }).waitFor();
    assert.ok(!(await page.content()).includes(key), "the secret is not on the page");

    const names = page.getByLabel("Names (spaces or commas between them)");
    await names.fill("*.localhost");
    await page.getByRole("button", { name: "Order certificate" }).click();
    await page.locator("#toast", { hasText: "Certificate for *.localhost ordered" }).waitFor();
    // The method may be chosen: HTTP-01 on the public listener.
    await names.fill("www.localhost");
    await page.getByLabel("Validation", { exact: true }).selectOption("http");
    await page.getByRole("button", { name: "Order certificate" }).click();
    await page.locator("#toast", { hasText: "Certificate for www.localhost ordered" }).waitFor();
    const httpRow = page.locator("#acme-table tbody tr", { hasText: "www.localhost" });
    assert.equal((await httpRow.locator("td").nth(1).textContent()).trim(), "HTTP");
    await httpRow.getByRole("button", { name: "Remove" }).click();
    await httpRow.getByRole("button", { name: "Confirm remove" }).click();
    await httpRow.waitFor({ state: "detached" });
    const packRow = page.locator("#acme-table tbody tr", { hasText: "*.localhost" });
    await packRow.waitFor();
    assert.equal((await packRow.locator("td").nth(1).textContent()).trim(), "DNS");
    await shot("09c-acme-dns");

    // The settings stay while a pack is validated over DNS.
    provoke({ status: 409, url: /ssl\/acme_dns$/ });
    provoke({ text: /validated over DNS with these settings/ });
    await page.getByRole("button", { name: "Remove DNS settings" }).click();
    await page.getByRole("button", { name: "Confirm remove" }).click();
    await page.locator("#page-error", { hasText: "remove it first" }).waitFor();
    await packRow.getByRole("button", { name: "Remove" }).click();
    await packRow.getByRole("button", { name: "Confirm remove" }).click();
    await packRow.waitFor({ state: "detached" });
    await page.getByRole("button", { name: "Remove DNS settings" }).click();
    await page.getByRole("button", { name: "Confirm remove" }).click();
    await page.locator("#toast", { hasText: "DNS settings removed" }).waitFor();
    await current.filter({ hasText: "None: names are validated with TLS-ALPN-01" }).waitFor();
    await assertToastClear("Hostnames (DNS validation)");
  }

  step("IP lists: create one, a bad item is named, items added; a rule using it blocks at the edge until an item goes");
  await nav("IP lists", `${base}/dashboard/lists`);
  await page.getByLabel("Name").fill("blocked_clients");
  await page.getByLabel("Description").fill("addresses to refuse");
  await page.getByRole("button", { name: "Create list" }).click();
  await page.locator("#toast", { hasText: "List $blocked_clients created" }).waitFor();
  const listRow = page.locator("#ls-table tbody tr", { hasText: "$blocked_clients" });
  await listRow.waitFor();
  const itemsText = page.getByLabel("Addresses or CIDR ranges, one per line");
  provoke({ status: 400, url: /\/rules\/lists\/[^/]+\/items$/ });
  provoke({ text: /did you mean 10\.0\.0\.0\/8/ });
  await itemsText.fill("10.0.0.1/8");
  await page.getByRole("button", { name: "Add items" }).click();
  await page.locator("#page-error", { hasText: "did you mean 10.0.0.0/8" }).waitFor();
  await itemsText.fill("127.0.0.1\n192.0.2.0/24");
  await page.getByLabel("Comment").fill("test clients");
  await page.getByRole("button", { name: "Add items" }).click();
  await page.locator("#toast", { hasText: "2 items added to $blocked_clients" }).waitFor();
  await page.locator("#ls-items-table tbody tr", { hasText: "192.0.2.0/24" }).waitFor();
  // The lists table is reloaded after the items table: wait for its count rather than read it once.
  await listRow.locator("td").nth(1).filter({ hasText: /^2$/ }).waitFor();
  const entryUrl = `${base}/client/v4/zones/${zoneId}/rulesets/phases/http_request_firewall_custom/entrypoint`;
  const entry = (await (await fetch(entryUrl, { headers: authorization })).json()).result;
  const rulesUrl = `${base}/client/v4/zones/${zoneId}/rulesets/${entry.id}/rules`;
  const added = await fetch(rulesUrl, {
    method: "POST",
    headers: authorization,
    body: JSON.stringify({
      description: "listed clients",
      expression: 'ip.src in $blocked_clients and http.request.uri.path eq "/listed"',
      action: "block",
    }),
  });
  const addedBody = await added.json();
  assert.equal(added.status, 200, JSON.stringify(addedBody));
  const listedRule = addedBody.result.rules.find((r) => r.description === "listed clients");
  await until("a client in the list", 403, () => edgeGet("/listed"));
  await page.reload();
  await ready();
  await listRow.locator("td").nth(2).filter({ hasText: /^1 rule$/ }).waitFor();
  // A list that a rule uses cannot be deleted.
  provoke({ status: 409, url: /\/rules\/lists\/[^/]+$/ });
  provoke({ text: /referenced by rules/ });
  await listRow.getByRole("button", { name: "Delete" }).click();
  await listRow.getByRole("button", { name: "Confirm delete" }).click();
  await page.locator("#page-error", { hasText: "referenced by rules" }).waitFor();
  await listRow.getByRole("button", { name: "Items" }).click();
  const listedItem = page.locator("#ls-items-table tbody tr", { hasText: "127.0.0.1" });
  assert.equal(await listedItem.locator("td").nth(1).textContent(), "test clients");
  await shot("09a-ip-lists");
  await listedItem.getByRole("button", { name: "Remove" }).click();
  await listedItem.getByRole("button", { name: "Confirm remove" }).click();
  await listedItem.waitFor({ state: "detached" });
  await page.locator("#toast", { hasText: "127.0.0.1 removed from $blocked_clients" }).waitFor();
  await until("the address removed from the list", 200, () => edgeGet("/listed"));
  const removed = await fetch(`${rulesUrl}/${listedRule.id}`, { method: "DELETE", headers: authorization });
  assert.equal(removed.status, 200, await removed.text());
  await page.reload();
  await ready();
  await listRow.getByRole("button", { name: "Delete" }).click();
  await listRow.getByRole("button", { name: "Confirm delete" }).click();
  await listRow.waitFor({ state: "detached" });
  await assertToastClear("IP lists");

  step("Security rules: a rate limit per address on one path; URL normalization off and on again");
  await nav("Security rules", `${base}/dashboard/rules`);
  const rlForm = page.locator("#rl-form");
  await rlForm.getByLabel("Requests", { exact: true }).fill("1");
  await rlForm.getByLabel("Per period").selectOption("10");
  await rlForm.getByLabel("Counted per").selectOption("ip");
  assert.equal(await rlForm.getByLabel("Requests counted (expression)").inputValue(), "true", "the expression follows what is counted");
  await rlForm.getByLabel("Requests counted (expression)").fill('http.request.uri.path eq "/limited"');
  await rlForm.getByLabel("Mitigation timeout").selectOption("0");
  await rlForm.getByLabel("Name", { exact: true }).fill("one at a time");
  await rlForm.getByRole("button", { name: "Add rate limit" }).click();
  await page.locator("#toast", { hasText: "Rate limit added" }).waitFor();
  const rlRow = page.locator("#rl-table tbody tr", { hasText: "one at a time" });
  await rlRow.waitFor();
  const rlCells = await rlRow.locator("td").allTextContents();
  assert.deepEqual(rlCells.slice(1, 5), ['http.request.uri.path eq "/limited"', "1 per 10 seconds", "IP address", "429 (throttled)"]);
  await until("the rate limit", 429, () => edgeGet("/limited"));
  await shot("07c-rate-limits");
  await rlRow.getByRole("button", { name: "Delete" }).click();
  await rlRow.getByRole("button", { name: "Confirm delete" }).click();
  await rlRow.waitFor({ state: "detached" });
  await until("/%61pi is /api to the mTLS rule", 403, () => edgeGet("/%61pi"));
  assert.equal(await page.getByLabel("Scope").inputValue(), "incoming");
  await page.getByLabel("Scope").selectOption("none");
  await page.getByRole("button", { name: "Save URL normalization" }).click();
  await page.locator("#toast", { hasText: "URL normalization saved" }).waitFor();
  await until("normalization off: /%61pi is not /api", 200, () => edgeGet("/%61pi"));
  await page.reload();
  await ready();
  assert.equal(await page.getByLabel("Scope").inputValue(), "none");
  await page.getByLabel("Scope").selectOption("incoming");
  await page.getByRole("button", { name: "Save URL normalization" }).click();
  await page.locator("#toast", { hasText: "URL normalization saved" }).waitFor();
  await until("normalization on again", 403, () => edgeGet("/%61pi"));

  step("revoke the certificate (two clicks, Close has the focus): the edge refuses it and Security events say revoked");
  await nav("Client Certificates", `${base}/dashboard/certificates`);
  await row.getByRole("button", { name: "Details" }).click();
  await page.locator("#cert-detail[open]").waitFor();
  assert.equal(await page.evaluate(() => document.activeElement?.id), "detail-close", "Close, not Revoke, has the initial focus");
  await shot("10-certificate-detail");
  const revoke = page.locator("#detail-revoke");
  await revoke.click();
  await page.locator("#detail-revoke", { hasText: "Confirm revoke" }).waitFor();
  assert.equal(await page.locator("#cert-detail[open]").count(), 1, "one click does not revoke");
  assert.equal(await row.locator(".badge", { hasText: "active" }).count(), 1);
  await revoke.click();
  await row.locator(".badge", { hasText: "revoked" }).waitFor();
  await shot("11-certificate-revoked");
  const after = await edgeGet("/");
  assert.equal(after.status, 200, "paths the rule does not name stay open");
  await nav("Security events", `${base}/dashboard/events`);
  const revokedResponse = await until("the revoked certificate on /api", 403, async () => curlEdge("/api", certFile, keyFile));
  assert.equal(revokedResponse.body, "Edited: present your device certificate.");
  const revokedEvent = page.locator("#events-table tbody tr", { hasText: "GET /api" }).filter({ has: page.locator(".badge", { hasText: /^revoked$/ }) });
  await revokedEvent.first().waitFor({ timeout: 15_000 });
  assert.notEqual((await revokedEvent.first().locator("td").nth(6).textContent()).trim(), "—", "the event names the certificate's fingerprint");
  assert.equal((await revokedEvent.first().locator(".verify-error").textContent()).trim(), "certificate revoked", "and why it was refused");
  assert.match(await revokedEvent.first().locator(".subject").textContent(), /CN=/, "and whose it is");
  await page.getByLabel("mTLS status").selectOption("revoked");
  await allRows(5, "revoked");
  await shot("11a-security-events-revoked");

  step("restore the certificate: the edge accepts it again");
  await nav("Client Certificates", `${base}/dashboard/certificates`);
  await row.getByRole("button", { name: "Details" }).click();
  await page.locator("#cert-detail[open]").waitFor();
  assert.equal(await page.locator("#cert-detail").getByRole("button", { name: "Revoke" }).isHidden(), true);
  await page.locator("#cert-detail").getByRole("button", { name: "Restore" }).click();
  await row.locator(".badge", { hasText: "active" }).waitFor();
  await page.locator("#toast", { hasText: "Certificate restored" }).waitFor();
  await until("the restored certificate on /api", 200, async () => curlEdge("/api", certFile, keyFile));

  step("disable and re-enable the rule; a failed save puts the switch back; focus stays on the switch");
  await nav("Security rules", `${base}/dashboard/rules`);
  const toggle = edited.getByRole("checkbox");
  provoke({ status: 500, url: /\/rulesets\/[^/]+\/rules\/[^/]+$/ });
  provoke({ text: /simulated failure/ });
  await page.route(/\/client\/v4\/zones\/[^/]+\/rulesets\/[^/]+\/rules\/[^/]+$/, (route) =>
    route.request().method() === "PATCH"
      ? route.fulfill({ status: 500, contentType: "application/json", body: JSON.stringify({ success: false, errors: [{ code: 10000, message: "simulated failure" }] }) })
      : route.continue(),
  );
  await toggle.click();
  await page.locator("#page-error", { hasText: "simulated failure" }).waitFor();
  await edited.getByText("On", { exact: true }).waitFor();
  assert.equal(await toggle.isChecked(), true, "the switch shows the saved state after a failed save");
  await page.unroute(/\/client\/v4\/zones\/[^/]+\/rulesets\/[^/]+\/rules\/[^/]+$/);
  await toggle.uncheck();
  await edited.getByText("Off", { exact: true }).waitFor();
  await page.waitForFunction(() => document.activeElement?.dataset.control === "enabled");
  await until("the disabled rule", 200, () => edgeGet("/api"));
  await page.keyboard.press("Space");
  await edited.getByText("On", { exact: true }).waitFor();
  assert.equal(await toggle.isChecked(), true);
  await blockedWith(403, "Edited: present your device certificate.");

  step("overview: the chart counts the edge's requests, and the one-week certificate is expiring");
  await nav("Overview", `${base}/dashboard`);
  const requests = Number((await page.locator("#ov-requests").textContent()).replaceAll(",", ""));
  const blocks = Number((await page.locator("#ov-blocked").textContent()).replaceAll(",", ""));
  assert.ok(requests >= 3, `requests counted: ${requests}`);
  assert.ok(blocks >= 2 && blocks < requests, `blocks counted: ${blocks} of ${requests}`);
  assert.ok((await page.locator("#ov-chart svg rect.bar-requests").count()) >= 1, "a request bar is drawn");
  assert.ok((await page.locator("#ov-chart svg rect.bar-blocked").count()) >= 1, "a block bar is drawn");
  assert.match(await page.locator("#ov-chart-caption").textContent(), /request.*blocked/);
  const expiring = page.locator("#ov-expiring tbody tr", { hasText: "device-p12" });
  await expiring.waitFor();
  assert.match(await expiring.locator("td").nth(3).textContent(), /^[67] days$/);
  assert.equal(await page.locator("#ov-expiring tbody tr", { hasText: "device-1" }).count(), 0, "a one-year certificate is not expiring");
  assert.equal(await page.locator("#ov-expiring-count").textContent(), "1");
  // localhost and app.localhost by the managed CA, byo.localhost by the uploaded CA.
  assert.equal(await page.locator("#ov-mtls-hosts").textContent(), "3");
  await page.getByText("Show the numbers per minute").click();
  assert.ok((await page.locator("#ov-traffic-table tbody tr").count()) >= 1);
  await shot("13-overview");

  step("bring your own CA: a CA in use cannot go; remove its hostnames, then delete it");
  await nav("Client Certificates", `${base}/dashboard/certificates`);
  await page.getByRole("tab", { name: "Bring your own CA" }).click();
  await byoca.getByRole("button", { name: "Edit hostnames" }).click();
  await hostsDialog.getByLabel("byo.localhost", { exact: true }).uncheck();
  await hostsDialog.getByRole("button", { name: "Save hostnames" }).click();
  await hostsDialog.waitFor({ state: "hidden" });
  await byoca.locator("td.hosts-cell", { hasText: "none" }).waitFor();
  await byoca.getByRole("button", { name: "Delete" }).click();
  await byoca.getByRole("button", { name: "Confirm delete" }).click();
  await byoca.waitFor({ state: "detached" });
  await page.getByRole("tab", { name: "Managed CA" }).click();

  step("API tokens: create a provisioning token limited to a zone, an address and a date, use it, revoke it");
  await nav("API tokens", `${base}/dashboard/tokens`);
  const mine = page.locator("#tk-table tbody tr", { hasText: "this session" });
  await mine.waitFor();
  await page.getByLabel("Name").fill("provisioning service");
  await page.getByLabel("Scope").selectOption("certificates");
  await page.getByLabel("Expires on (optional; at 00:00 UTC)").fill("2099-01-31");
  await page.getByLabel("Works only from (optional; IP addresses or CIDRs)").fill("127.0.0.1");
  await page.getByLabel("Only these zones (optional; none selected: every zone and the account)").selectOption({ label: "localhost" });
  await page.getByRole("button", { name: "Create token" }).click();
  await page.locator("#toast", { hasText: "Token provisioning service created" }).waitFor();
  const secret = (await page.locator("#tk-secret-value").textContent()).trim();
  assert.match(secret, /^pct_/);
  const provisioning = { Authorization: `Bearer ${secret}`, "Content-Type": "application/json" };
  const visible = await fetch(`${base}/client/v4/zones`, { headers: provisioning });
  assert.equal(visible.status, 200, "it reads");
  assert.deepEqual((await visible.json()).result.map((z) => z.name), ["localhost"], "its zone only");
  const accountWide = await fetch(`${base}/client/v4/user/tokens`, { headers: provisioning });
  assert.equal(accountWide.status, 403, "nothing of the account");
  const denied = await fetch(`${base}/client/v4/zones`, { method: "POST", headers: provisioning, body: JSON.stringify({ name: "nope.example" }) });
  assert.equal(denied.status, 403, "a certificates token cannot create zones");
  const tokenRow = page.locator("#tk-table tbody tr", { hasText: "provisioning service" });
  assert.equal(await tokenRow.locator("td").nth(1).textContent(), "certificates");
  assert.equal(await tokenRow.locator("td").nth(2).textContent(), "until 2099-01-31 · only from 127.0.0.1 · zones localhost");
  await shot("17a-api-tokens");
  await tokenRow.getByRole("button", { name: "Revoke" }).click();
  await tokenRow.getByRole("button", { name: "Confirm revoke" }).click();
  await tokenRow.locator(".badge", { hasText: "revoked" }).waitFor();
  assert.equal(await page.locator("#tk-secret").isHidden(), true, "the revoked token's secret is no longer shown");
  assert.equal(await page.locator("#tk-secret-value").textContent(), "");
  assert.equal((await fetch(`${base}/client/v4/zones`, { headers: provisioning })).status, 401, "revoked at once");
  await assertToastClear("API tokens");

  step("managed CA: rotate (old certificates still work), then retire the old CA (they stop working)");
  await nav("Client Certificates", `${base}/dashboard/certificates`);
  const caRows = page.locator("#mca-table tbody tr");
  await caRows.first().waitFor();
  assert.equal(await caRows.count(), 1);
  const rotate = page.getByRole("button", { name: "Rotate" });
  await rotate.click();
  await page.getByRole("button", { name: /^Confirm rotate/ }).click();
  await page.locator("#toast", { hasText: "issues from now on" }).waitFor();
  await page.locator("#mca-table tbody tr", { hasText: "trusted, no longer issues" }).waitFor();
  assert.equal(await caRows.count(), 2);
  assert.equal((await until("the old CA's certificate after the rotation", 200, async () => curlEdge("/api", certFile, keyFile))).status, 200);
  await shot("16a-managed-ca-rotated");
  const oldCa = page.locator("#mca-table tbody tr", { hasText: "trusted, no longer issues" });
  await oldCa.getByRole("button", { name: "Retire" }).click();
  await oldCa.getByRole("button", { name: /^Confirm retire/ }).click();
  await page.locator("#toast", { hasText: "retired" }).waitFor();
  await page.locator("#mca-table tbody tr", { hasText: "retired" }).waitFor();
  assert.equal((await until("the retired CA's certificate", 403, async () => curlEdge("/api", certFile, keyFile))).status, 403);
  await assertToastClear("Client Certificates");

  step("a managed CA signed by our own root: request, CSR download, install refused without the chain, then installed");
  await page.locator("#mcr-cn").fill("E2E Devices CA");
  await page.locator("#mcr-key").selectOption("p384");
  const [csrDownload] = await Promise.all([
    page.waitForEvent("download"),
    page.getByRole("button", { name: "Create request" }).click(),
  ]);
  await csrDownload.saveAs(path.join(work, "sub.csr"));
  const requestRow = page.locator("#mcr-table tbody tr", { hasText: "E2E Devices CA" });
  await requestRow.waitFor();
  const signByRoot = (...args) => {
    const out = spawnSync("openssl", args, { cwd: work, encoding: "utf8" });
    if (out.status !== 0) throw new Error(`openssl ${args.join(" ")}: ${out.stderr}`);
  };
  signByRoot("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "root.key", "-out", "root.pem",
    "-days", "7300", "-subj", "/CN=E2E Root", "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign");
  signByRoot("x509", "-req", "-in", "sub.csr", "-CA", "root.pem", "-CAkey", "root.key", "-CAcreateserial", "-copy_extensions", "copyall",
    "-days", "7000", "-out", "sub.pem");
  await requestRow.getByRole("button", { name: "Install certificate" }).click();
  const installDialog = page.locator("#mcr-dialog");
  await installDialog.getByLabel("Certificate your CA signed (PEM)").fill(fs.readFileSync(path.join(work, "sub.pem"), "utf8"));
  provoke({ status: 400, url: /\/managed_ca\/requests\/[0-9a-f]+\/install$/ });
  provoke({ text: /no chain: give the certificate of the CA that signed it/ });
  await installDialog.getByRole("button", { name: "Install", exact: true }).click();
  await installDialog.locator(".dialog-error", { hasText: "no chain" }).waitFor();
  await installDialog.getByLabel(/^Chain:/).fill(fs.readFileSync(path.join(work, "root.pem"), "utf8"));
  await shot("16b-managed-ca-install");
  await installDialog.getByRole("button", { name: "Install", exact: true }).click();
  await page.locator("#toast", { hasText: "signed by CN=E2E Root" }).waitFor();
  await page.locator("#mca-table tbody tr", { hasText: "E2E Devices CA" }).getByText("CN=E2E Root").waitFor();
  await page.locator("#mcr-table tbody tr", { hasText: "No request waits for a certificate." }).waitFor();
  await assertToastClear("Client Certificates");

  step("phone-sized layout");
  await page.setViewportSize({ width: 390, height: 844 });
  await page.reload();
  await ready();
  await nav("Overview", `${base}/dashboard`);
  await page.locator("#ov-chart svg").waitFor();
  await assertFits("the overview");
  await shot("14-overview-phone");
  await nav("Client Certificates", `${base}/dashboard/certificates`);
  await assertFits("Client Certificates");
  await shot("12-client-certificates-phone");
  for (const [name, url, file] of [
    ["Hostnames", `${base}/dashboard/hostnames`, "15-hostnames-phone"],
    ["Security rules", `${base}/dashboard/rules`, "16-security-rules-phone"],
    ["IP lists", `${base}/dashboard/lists`, "16a-ip-lists-phone"],
  ]) {
    await nav(name, url);
    await assertFits(name);
    await shot(file);
  }

  await nav("Security events", `${base}/dashboard/events`);
  await assertFits("Security events");
  await shot("17-security-events-phone");
  await nav("Create a mTLS rule", `${base}/dashboard/mtls-rule`);
  await page.locator("#rule-diagnostic.ok").waitFor();
  await assertFits("Create a mTLS rule");
  await shot("18-mtls-rule-phone");

  step("sign out: the pages send to sign-in, and the old cookie no longer opens the API");
  await page.setViewportSize({ width: 1280, height: 900 });
  const oldCookie = (await context.cookies(base)).find((c) => c.name === "portcullis_session");
  assert.ok(oldCookie, "signed in before signing out");
  const withOld = { headers: { Cookie: `portcullis_session=${oldCookie.value}`, Accept: "application/json" } };
  assert.equal((await fetch(`${base}/client/v4/zones`, withOld)).status, 200, "the cookie works before sign-out");
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.waitForURL(`${base}/dashboard/login`);
  await page.goto(`${base}/dashboard`);
  assert.match(page.url(), /\/dashboard\/login$/, "the dashboard sends a signed-out browser to sign-in");
  await page.getByLabel("API token").waitFor();
  const stale = await fetch(`${base}/client/v4/zones`, withOld);
  assert.equal(stale.status, 401, `the API refuses the old session cookie: ${await stale.text()}`);
  const staleWrite = await fetch(`${base}/client/v4/zones`, {
    method: "POST",
    headers: { ...withOld.headers, "Content-Type": "application/json" },
    body: JSON.stringify({ name: "after-sign-out.example" }),
  });
  assert.equal(staleWrite.status, 401, "nor writes with it");

  assert.deepEqual(problems, [], "no page errors or CSP violations");
  console.log("dashboard e2e: all steps passed");
} catch (error) {
  exitCode = 1;
  console.error("dashboard e2e failed:", error);
  console.error("page problems:", problems);
  try {
    await page.screenshot({ path: path.join(shots, "failure.png"), fullPage: true });
    console.error(`failure screenshot: ${path.join(shots, "failure.png")}; page at ${page.url()}`);
  } catch {
    // The browser may be gone.
  }
} finally {
  await context.close();
  if (work) fs.rmSync(work, { recursive: true, force: true });
  fs.rmSync(userDataDir, { recursive: true, force: true });
}
process.exit(exitCode);
