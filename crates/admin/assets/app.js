// Portcullis dashboard: a small vanilla-JS module (no framework, no build step) over the JSON API at /client/v4.
// It authenticates with the session cookie and sends the page's CSRF token on every state-changing call.

const API = "/client/v4";
const csrf = document.querySelector('meta[name="csrf-token"]')?.content ?? "";
const canWrite = document.querySelector('meta[name="can-write"]')?.content === "true";
const PHASE = "http_request_firewall_custom";

// ---------- helpers ----------

async function api(method, path, body) {
  const options = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
  if (method !== "GET") options.headers["X-CSRF-Token"] = csrf;
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(API + path, options);
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (response.status === 401) {
    window.location.assign("/dashboard/login");
  }
  if (!response.ok || !data || data.success !== true) {
    const message = data?.errors?.map((e) => e.message).join("; ") || `HTTP ${response.status}`;
    const error = new Error(message);
    error.status = response.status;
    throw error;
  }
  return data;
}

// Builds an element; children may be strings (set as text, never parsed as HTML), nodes, or arrays of them.
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

const $ = (id) => document.getElementById(id);

function toast(message) {
  const el = $("toast");
  if (!el) return;
  el.textContent = message;
  el.classList.add("show");
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => el.classList.remove("show"), 3500);
}

function showError(error) {
  const el = $("page-error");
  const message = error instanceof Error ? error.message : String(error);
  if (el) {
    el.textContent = message;
    el.hidden = false;
    el.scrollIntoView({ block: "nearest" });
  }
  console.error(error);
}

function clearError() {
  const el = $("page-error");
  if (el) el.hidden = true;
}

// Runs an async action from a button: disables it meanwhile and reports failures on the page.
async function run(button, action) {
  clearError();
  if (button) button.disabled = true;
  try {
    await action();
  } catch (error) {
    showError(error);
  } finally {
    if (button) button.disabled = false;
  }
}

function download(filename, content, type) {
  const blob = content instanceof Blob ? content : new Blob([content], { type });
  const url = URL.createObjectURL(blob);
  const a = h("a", { href: url, download: filename, hidden: true });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

function base64Bytes(text) {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i += 1) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

const day = (rfc3339) => (rfc3339 ? rfc3339.slice(0, 10) : "");
const when = (rfc3339) => (rfc3339 ? rfc3339.replace("T", " ").replace("Z", " UTC") : "");
const lines = (text) => text.split(/[\n,]/).map((s) => s.trim()).filter(Boolean);

function statusBadge(status) {
  const kind = { active: "ok", revoked: "danger", ok: "ok", block: "danger", log: "warn" }[status] ?? "warn";
  return h("span", { class: `badge badge-${kind}` }, status.replaceAll("_", " "));
}

// A button that asks for a second click before doing something destructive (no window.confirm).
function confirmButton(label, confirmLabel, action, extra = {}) {
  let armed = false;
  const button = h("button", { type: "button", class: "btn-danger btn-small", ...extra }, label);
  button.addEventListener("click", () => {
    if (!armed) {
      armed = true;
      button.textContent = confirmLabel;
      setTimeout(() => {
        armed = false;
        button.textContent = label;
      }, 4000);
      return;
    }
    run(button, action);
  });
  return button;
}

function emptyRow(table, columns, text) {
  table.tBodies[0].replaceChildren(h("tr", {}, h("td", { colspan: columns, class: "empty" }, text)));
}

// ---------- zone and account ----------

let zone = null;
let accountId = null;

async function loadZones() {
  const picker = $("zone-picker");
  const zones = (await api("GET", "/zones?per_page=1000")).result ?? [];
  const wanted = new URLSearchParams(window.location.search).get("zone") ?? localStorage.getItem("portcullis.zone");
  zone = zones.find((z) => z.name === wanted || z.id === wanted) ?? zones[0] ?? null;
  if (picker) {
    picker.replaceChildren(...zones.map((z) => h("option", { value: z.id, selected: zone && z.id === zone.id }, z.name)));
    if (!zones.length) picker.replaceChildren(h("option", { value: "" }, "no zones"));
    picker.addEventListener("change", () => {
      const next = zones.find((z) => z.id === picker.value);
      if (next) localStorage.setItem("portcullis.zone", next.name);
      const url = new URL(window.location.href);
      url.searchParams.delete("zone");
      window.location.assign(url.pathname);
    });
  }
  return zone;
}

async function account() {
  if (!accountId) accountId = (await api("GET", "/accounts")).result?.[0]?.id ?? null;
  return accountId;
}

function noZone() {
  const main = $("main");
  main.querySelectorAll(":scope > :not(h1):not(#page-error)").forEach((el) => {
    el.hidden = true;
  });
  main.append(
    h("div", { class: "card" }, h("p", {}, "There is no zone yet. Create one with ", h("code", {}, "portcullis zone add example.com"), ".")),
  );
}

// ---------- Client Certificates ----------

async function certificatesPage() {
  setupTabs();
  setupHosts();
  setupWizard();
  setupList();
  setupByoca();
  $("download-ca").addEventListener("click", (e) =>
    run(e.currentTarget, async () => {
      const cas = (await api("GET", `/accounts/${await account()}/managed_ca`)).result ?? [];
      const active = cas.find((ca) => ca.status === "active") ?? cas[0];
      if (!active) throw new Error("there is no managed CA yet");
      download("portcullis-managed-ca.pem", active.certificate, "application/x-pem-file");
    }),
  );
}

function setupTabs() {
  const tabs = [...document.querySelectorAll('[role="tab"]')];
  const select = (tab) => {
    for (const other of tabs) {
      const selected = other === tab;
      other.setAttribute("aria-selected", String(selected));
      other.tabIndex = selected ? 0 : -1;
      $(other.getAttribute("aria-controls")).hidden = !selected;
    }
    if (tab.id === "tab-byoca") loadByoca();
  };
  tabs.forEach((tab, i) => {
    tab.addEventListener("click", () => select(tab));
    tab.addEventListener("keydown", (e) => {
      if (e.key !== "ArrowRight" && e.key !== "ArrowLeft") return;
      const next = tabs[(i + (e.key === "ArrowRight" ? 1 : tabs.length - 1)) % tabs.length];
      next.focus();
      select(next);
    });
  });
}

let hosts = [];
let editing = [];

async function loadHosts() {
  const data = await api("GET", `/zones/${zone.id}/certificate_authorities/hostname_associations`);
  hosts = data.result?.hostnames ?? [];
  const list = $("hosts-list");
  list.replaceChildren(...hosts.map((name) => h("li", {}, name)));
  if (!hosts.length) list.replaceChildren(h("li", { class: "none" }, "No hostnames have mTLS enabled yet."));
}

function renderEditing() {
  $("hosts-edit-list").replaceChildren(
    ...editing.map((name) =>
      h(
        "li",
        {},
        name,
        h(
          "button",
          {
            type: "button",
            "aria-label": `Remove ${name}`,
            title: `Remove ${name}`,
            onclick: () => {
              editing = editing.filter((n) => n !== name);
              renderEditing();
            },
          },
          "✕",
        ),
      ),
    ),
  );
}

function setupHosts() {
  const form = $("hosts-form");
  const input = $("host-input");
  const addHost = () => {
    let name = input.value.trim().toLowerCase();
    if (!name) return;
    if (!name.includes(".") && name !== zone.name && !name.endsWith(zone.name)) name = `${name}.${zone.name}`;
    if (!editing.includes(name)) editing.push(name);
    input.value = "";
    renderEditing();
    input.focus();
  };
  $("hosts-edit").addEventListener("click", async () => {
    editing = [...hosts];
    renderEditing();
    form.hidden = false;
    input.focus();
    try {
      const names = ((await api("GET", `/zones/${zone.id}/hostnames`)).result ?? []).map((x) => x.hostname);
      $("host-options").replaceChildren(...names.map((n) => h("option", { value: n })));
    } catch (error) {
      showError(error);
    }
  });
  $("host-add").addEventListener("click", addHost);
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter") {
      e.preventDefault();
      addHost();
    }
  });
  $("hosts-cancel").addEventListener("click", () => {
    form.hidden = true;
  });
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    if (input.value.trim()) addHost();
    run(e.submitter, async () => {
      await api("PUT", `/zones/${zone.id}/certificate_authorities/hostname_associations`, { hostnames: editing });
      form.hidden = true;
      await loadHosts();
      toast("Hosts saved");
    });
  });
  loadHosts().catch(showError);
}

let created = null;

function setupWizard() {
  const wizard = $("wizard");
  const form = $("cert-form");
  const result = $("cert-result");
  const mode = () => form.querySelector('input[name="mode"]:checked').value;
  form.querySelectorAll('input[name="mode"]').forEach((radio) =>
    radio.addEventListener("change", () => {
      $("generate-fields").hidden = mode() !== "generate";
      $("csr-fields").hidden = mode() !== "csr";
    }),
  );
  $("add-cert").addEventListener("click", () => {
    form.reset();
    $("generate-fields").hidden = false;
    $("csr-fields").hidden = true;
    form.hidden = false;
    result.hidden = true;
    wizard.hidden = false;
    $("cert-key-type").focus();
  });
  $("cert-cancel").addEventListener("click", () => {
    wizard.hidden = true;
  });
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    run($("cert-create"), async () => {
      const body = { validity_days: Number($("cert-validity").value) };
      if (mode() === "csr") {
        body.csr = $("cert-csr").value.trim();
      } else {
        body.generate_key = { type: $("cert-key-type").value };
        const optional = { common_name: "cert-cn", organization: "cert-o", organizational_unit: "cert-ou", pkcs12_password: "cert-p12" };
        for (const [field, id] of Object.entries(optional)) {
          const value = $(id).value.trim();
          if (value) body[field] = value;
        }
      }
      created = (await api("POST", `/zones/${zone.id}/client_certificates`, body)).result;
      $("out-cert").value = created.certificate;
      $("out-key").value = created.private_key ?? "";
      $("out-key-block").hidden = !created.private_key;
      $("download-p12").hidden = !created.pkcs12;
      $("cert-p12").value = "";
      form.hidden = true;
      result.hidden = false;
      $("out-cert").focus();
      $("out-cert").setSelectionRange(0, 0);
      $("out-cert").scrollTop = 0;
      await loadCerts();
    });
  });
  const baseName = () => (created?.common_name || created?.id || "certificate").replace(/[^A-Za-z0-9._-]+/g, "_");
  $("download-cert").addEventListener("click", () => download(`${baseName()}.pem`, created.certificate, "application/x-pem-file"));
  $("download-key").addEventListener("click", () => download(`${baseName()}.key.pem`, created.private_key, "application/x-pem-file"));
  $("download-p12").addEventListener("click", () =>
    download(`${baseName()}.p12`, new Blob([base64Bytes(created.pkcs12)], { type: "application/x-pkcs12" })),
  );
  document.querySelectorAll("[data-copy]").forEach((button) =>
    button.addEventListener("click", async () => {
      const area = $(button.dataset.copy);
      try {
        await navigator.clipboard.writeText(area.value);
      } catch {
        area.select();
        document.execCommand("copy");
      }
      toast("Copied");
    }),
  );
  $("cert-done").addEventListener("click", () => {
    // The key is shown once: forget it.
    $("out-key").value = "";
    $("out-cert").value = "";
    created = null;
    wizard.hidden = true;
    $("add-cert").focus();
  });
}

let certs = [];
let certPage = 1;
const CERTS_PER_PAGE = 10;

async function loadCerts() {
  const all = [];
  for (let page = 1; page < 1000; page += 1) {
    const data = await api("GET", `/zones/${zone.id}/client_certificates?per_page=1000&page=${page}`);
    all.push(...(data.result ?? []));
    if (page >= (data.result_info?.total_pages ?? 1)) break;
  }
  certs = all;
  renderCerts();
}

function renderCerts() {
  const query = $("cert-search").value.trim().toLowerCase();
  const status = $("cert-status").value;
  const matching = certs.filter(
    (c) =>
      (status === "all" || c.status === status) &&
      (!query ||
        [c.common_name, c.organization, c.organizational_unit, c.serial_number, c.id].some((f) => (f ?? "").toLowerCase().includes(query))),
  );
  const pages = Math.max(1, Math.ceil(matching.length / CERTS_PER_PAGE));
  certPage = Math.min(Math.max(1, certPage), pages);
  const shown = matching.slice((certPage - 1) * CERTS_PER_PAGE, certPage * CERTS_PER_PAGE);
  const table = $("cert-table");
  table.tBodies[0].replaceChildren(
    ...shown.map((c) =>
      h(
        "tr",
        { "data-id": c.id },
        h("td", {}, c.common_name || "(no common name)"),
        h("td", {}, [c.organization, c.organizational_unit].filter(Boolean).join(" / ") || "—"),
        h("td", { class: "mono" }, c.serial_number),
        h("td", {}, day(c.expires_on)),
        h("td", {}, statusBadge(c.status)),
        h("td", {}, h("button", { type: "button", class: "btn btn-small", onclick: () => openDetail(c.id) }, "Details", h("span", { class: "sr-only" }, ` of ${c.common_name}`))),
      ),
    ),
  );
  if (!shown.length) emptyRow(table, 6, certs.length ? "No certificate matches." : "No client certificates yet: Add Certificate.");
  $("cert-page").textContent = `Page ${certPage} of ${pages} · ${matching.length} certificate${matching.length === 1 ? "" : "s"}`;
  $("cert-prev").disabled = certPage <= 1;
  $("cert-next").disabled = certPage >= pages;
}

function setupList() {
  $("cert-search").addEventListener("input", () => {
    certPage = 1;
    renderCerts();
  });
  $("cert-status").addEventListener("change", () => {
    certPage = 1;
    renderCerts();
  });
  $("cert-prev").addEventListener("click", () => {
    certPage -= 1;
    renderCerts();
  });
  $("cert-next").addEventListener("click", () => {
    certPage += 1;
    renderCerts();
  });
  const dialog = $("cert-detail");
  $("detail-close").addEventListener("click", () => dialog.close());
  $("detail-revoke").addEventListener("click", (e) =>
    run(e.currentTarget, async () => {
      await api("DELETE", `/zones/${zone.id}/client_certificates/${dialog.dataset.id}`);
      dialog.close();
      await loadCerts();
      toast("Certificate revoked");
    }),
  );
  $("detail-restore").addEventListener("click", (e) =>
    run(e.currentTarget, async () => {
      await api("PATCH", `/zones/${zone.id}/client_certificates/${dialog.dataset.id}`, { reactivate: true });
      dialog.close();
      await loadCerts();
      toast("Certificate restored");
    }),
  );
  loadCerts().catch(showError);
}

function openDetail(id) {
  const c = certs.find((x) => x.id === id);
  if (!c) return;
  const dialog = $("cert-detail");
  dialog.dataset.id = id;
  const fields = [
    ["Common name", c.common_name],
    ["Organization", c.organization],
    ["Organizational unit", c.organizational_unit],
    ["Country", c.country],
    ["Status", statusBadge(c.status)],
    ["Serial number", c.serial_number],
    ["SHA-256 fingerprint", c.fingerprint_sha256],
    ["Issued on", when(c.issued_on)],
    ["Expires on", when(c.expires_on)],
    ["Certificate authority", c.certificate_authority?.name],
    ["Id", c.id],
  ];
  $("detail-list").replaceChildren(...fields.flatMap(([k, v]) => [h("dt", {}, k), h("dd", { class: typeof v === "string" && v.length > 30 ? "mono" : "" }, v || "—")]));
  const revoked = c.status === "revoked";
  $("detail-revoke").hidden = !canWrite || revoked;
  $("detail-restore").hidden = !canWrite || !revoked;
  dialog.showModal();
}

async function loadByoca() {
  const table = $("byoca-table");
  try {
    const list = (await api("GET", `/accounts/${await account()}/mtls_certificates`)).result ?? [];
    table.tBodies[0].replaceChildren(
      ...list.map((ca) =>
        h(
          "tr",
          {},
          h("td", {}, ca.name || ca.id),
          h("td", {}, ca.issuer),
          h("td", { class: "mono" }, ca.serial_number),
          h("td", {}, day(ca.expires_on)),
          h(
            "td",
            {},
            canWrite &&
              confirmButton("Delete", "Confirm delete", async () => {
                await api("DELETE", `/accounts/${await account()}/mtls_certificates/${ca.id}`);
                toast("CA deleted");
                await loadByoca();
              }),
          ),
        ),
      ),
    );
    if (!list.length) emptyRow(table, 5, "No CAs uploaded.");
  } catch (error) {
    showError(error);
  }
}

function setupByoca() {
  $("byoca-form").addEventListener("submit", (e) => {
    e.preventDefault();
    run(e.submitter, async () => {
      const body = { ca: true, certificates: $("byoca-pem").value.trim() };
      const name = $("byoca-name").value.trim();
      if (name) body.name = name;
      await api("POST", `/accounts/${await account()}/mtls_certificates`, body);
      e.target.reset();
      toast("CA uploaded");
      await loadByoca();
    });
  });
}

// ---------- Create a mTLS rule ----------

function quote(text) {
  return `"${text.replace(/\\/g, "\\\\").replace(/"/g, '\\"')}"`;
}

export function mtlsExpression(paths, hostnames) {
  let expression = `(not cf.tls_client_auth.cert_verified or cf.tls_client_auth.cert_revoked) and http.request.uri.path in {${paths.map(quote).join(" ")}}`;
  if (hostnames.length) expression += ` and http.host in {${hostnames.map(quote).join(" ")}}`;
  return expression;
}

async function mtlsRulePage() {
  const expression = $("rule-expression");
  const diagnostic = $("rule-diagnostic");
  let timer = null;
  let sequence = 0;
  const validate = async () => {
    const mine = (sequence += 1);
    try {
      const result = (await api("POST", "/rules/validate", { expression: expression.value })).result;
      if (mine !== sequence) return;
      diagnostic.className = `diagnostic ${result.valid ? "ok" : "bad"}`;
      diagnostic.textContent = result.valid ? "✓ Valid expression" : result.diagnostic;
      expression.setAttribute("aria-invalid", String(!result.valid));
    } catch (error) {
      if (mine === sequence) diagnostic.textContent = error.message;
    }
  };
  const schedule = () => {
    clearTimeout(timer);
    timer = setTimeout(validate, 250);
  };
  const rebuild = () => {
    expression.value = mtlsExpression(lines($("rule-paths").value), lines($("rule-hosts").value));
    schedule();
  };
  $("rule-paths").addEventListener("input", rebuild);
  $("rule-hosts").addEventListener("input", rebuild);
  expression.addEventListener("input", schedule);
  $("rule-custom").addEventListener("change", (e) => {
    $("rule-custom-fields").hidden = !e.target.checked;
  });
  try {
    const associated = (await api("GET", `/zones/${zone.id}/certificate_authorities/hostname_associations`)).result?.hostnames ?? [];
    $("rule-hosts").placeholder = associated.join("\n") || "api.example.com";
  } catch {
    // Hostname hints are optional.
  }
  rebuild();
  $("rule-form").addEventListener("submit", (e) => {
    e.preventDefault();
    run($("rule-deploy"), async () => {
      const rule = { description: $("rule-name").value.trim(), expression: expression.value, action: $("rule-action").value, enabled: true };
      if ($("rule-custom").checked) {
        const content = $("rule-body").value;
        if (new TextEncoder().encode(content).length > 2048) throw new Error("the custom response body must be at most 2 KiB");
        rule.action_parameters = {
          response: { status_code: Number($("rule-status").value), content_type: $("rule-type").value, content },
        };
      }
      let ruleset = null;
      try {
        ruleset = (await api("GET", `/zones/${zone.id}/rulesets/phases/${PHASE}/entrypoint`)).result;
      } catch (error) {
        if (error.status !== 404) throw error;
      }
      if (ruleset) await api("POST", `/zones/${zone.id}/rulesets/${ruleset.id}/rules`, rule);
      else await api("PUT", `/zones/${zone.id}/rulesets/phases/${PHASE}/entrypoint`, { rules: [rule] });
      window.location.assign("/dashboard/rules?deployed=1");
    });
  });
}

// ---------- Security rules ----------

async function rulesPage() {
  if (new URLSearchParams(window.location.search).get("deployed")) toast("Rule deployed");
  await loadRules();
}

async function loadRules() {
  const table = $("rules-table");
  let ruleset = null;
  try {
    ruleset = (await api("GET", `/zones/${zone.id}/rulesets/phases/${PHASE}/entrypoint`)).result;
  } catch (error) {
    if (error.status !== 404) throw error;
  }
  const rules = ruleset?.rules ?? [];
  const path = (rule) => `/zones/${zone.id}/rulesets/${ruleset.id}/rules/${rule.id}`;
  const patch = (rule, body) => async () => {
    await api("PATCH", path(rule), body);
    await loadRules();
  };
  table.tBodies[0].replaceChildren(
    ...rules.map((rule, i) =>
      h(
        "tr",
        { "data-id": rule.id },
        h("td", {}, String(i + 1)),
        h("td", {}, rule.description || rule.id),
        h("td", { class: "mono expr" }, rule.expression),
        h("td", {}, statusBadge(rule.action)),
        h(
          "td",
          {},
          h(
            "label",
            { class: "inline" },
            h("input", {
              type: "checkbox",
              checked: rule.enabled,
              disabled: !canWrite,
              onchange: (e) => run(e.target, patch(rule, { enabled: e.target.checked })),
            }),
            rule.enabled ? "On" : "Off",
          ),
        ),
        h(
          "td",
          {},
          h(
            "div",
            { class: "row" },
            canWrite && [
            h("button", { type: "button", class: "btn btn-small", disabled: i === 0, "aria-label": `Move ${rule.description || rule.id} up`, onclick: (e) => run(e.currentTarget, patch(rule, { position: { before: rules[i - 1]?.id } })) }, "↑"),
            h("button", { type: "button", class: "btn btn-small", disabled: i === rules.length - 1, "aria-label": `Move ${rule.description || rule.id} down`, onclick: (e) => run(e.currentTarget, patch(rule, { position: { after: rules[i + 1]?.id } })) }, "↓"),
            confirmButton("Delete", "Confirm delete", async () => {
              await api("DELETE", path(rule));
              toast("Rule deleted");
              await loadRules();
            }),
            ],
          ),
        ),
      ),
    ),
  );
  if (!rules.length) emptyRow(table, 6, "No rules yet: Create a mTLS rule.");
}

// ---------- Security events ----------

async function eventsPage() {
  const ruleNames = new Map();
  try {
    const ruleset = (await api("GET", `/zones/${zone.id}/rulesets/phases/${PHASE}/entrypoint`)).result;
    for (const rule of ruleset?.rules ?? []) ruleNames.set(rule.id, rule.description || rule.id);
  } catch {
    // No rules yet: events show rule ids.
  }
  const refresh = async () => {
    const query = new URLSearchParams({ per_page: "100" });
    const host = $("ev-host").value.trim();
    if (host) query.set("host", host);
    if ($("ev-action").value) query.set("action", $("ev-action").value);
    if ($("ev-status").value) query.set("mtls_status", $("ev-status").value);
    try {
      const events = (await api("GET", `/zones/${zone.id}/security/events?${query}`)).result ?? [];
      const table = $("events-table");
      table.tBodies[0].replaceChildren(
        ...events.map((ev) =>
          h(
            "tr",
            { "data-id": ev.id },
            h("td", {}, when(ev.occurred_at)),
            h("td", {}, statusBadge(ev.action), " ", String(ev.status_code)),
            h("td", {}, ev.host),
            h("td", { class: "mono nowrap" }, `${ev.method} ${ev.path}`),
            h("td", { class: "mono nowrap" }, ev.client_ip),
            h("td", {}, statusBadge(ev.mtls_status)),
            h("td", { class: "mono", title: ev.cert_fingerprint_sha256 || undefined }, ev.cert_fingerprint_sha256 ? `${ev.cert_fingerprint_sha256.slice(0, 16)}…` : "—"),
            h("td", { title: ev.rule_id ?? undefined }, ev.rule_id ? (ruleNames.get(ev.rule_id) ?? ev.rule_id) : "—"),
          ),
        ),
      );
      if (!events.length) emptyRow(table, 8, "No security events match.");
      $("ev-updated").textContent = `Updated ${new Date().toLocaleTimeString()} · ${events.length} event${events.length === 1 ? "" : "s"}`;
      clearError();
    } catch (error) {
      showError(error);
    }
  };
  for (const id of ["ev-host", "ev-action", "ev-status"]) $(id).addEventListener("change", refresh);
  $("ev-host").addEventListener("input", refresh);
  setInterval(() => {
    if ($("ev-auto").checked && document.visibilityState === "visible") refresh();
  }, 3000);
  await refresh();
}

// ---------- Hostnames ----------

async function hostnamesPage() {
  $("hn-form").addEventListener("submit", (e) => {
    e.preventDefault();
    run(e.submitter, async () => {
      await api("POST", `/zones/${zone.id}/hostnames`, {
        hostname: $("hn-name").value.trim(),
        origin: $("hn-origin").value.trim(),
        tls_client_auth: $("hn-mode").value,
        client_certificate_forwarding: $("hn-forward").value,
      });
      e.target.reset();
      toast("Hostname added");
      await loadHostnames();
    });
  });
  await loadHostnames();
}

async function loadHostnames() {
  const [list, associated] = await Promise.all([
    api("GET", `/zones/${zone.id}/hostnames`).then((d) => d.result ?? []),
    api("GET", `/zones/${zone.id}/certificate_authorities/hostname_associations`).then((d) => d.result?.hostnames ?? []),
  ]);
  const table = $("hn-table");
  const select = (host, field, options) =>
    h(
      "select",
      {
        "aria-label": `${field.replaceAll("_", " ")} of ${host.hostname}`,
        disabled: !canWrite,
        onchange: (e) =>
          run(e.target, async () => {
            await api("PATCH", `/zones/${zone.id}/hostnames/${host.id}`, { [field]: e.target.value });
            toast("Saved");
          }),
      },
      options.map((o) => h("option", { value: o, selected: host[field] === o }, o)),
    );
  table.tBodies[0].replaceChildren(
    ...list.map((host) =>
      h(
        "tr",
        { "data-id": host.id },
        h("td", {}, host.hostname),
        h("td", { class: "mono" }, host.origin),
        h("td", {}, associated.includes(host.hostname) ? statusBadge("active") : h("span", { class: "badge badge-muted" }, "off")),
        h("td", {}, select(host, "tls_client_auth", ["request", "require"])),
        h("td", {}, select(host, "client_certificate_forwarding", ["none", "cloudflare", "cf_cert_headers", "rfc9440", "xfcc"])),
        h(
          "td",
          {},
          canWrite &&
            confirmButton("Delete", "Confirm delete", async () => {
              await api("DELETE", `/zones/${zone.id}/hostnames/${host.id}`);
              toast("Hostname deleted");
              await loadHostnames();
            }),
        ),
      ),
    ),
  );
  if (!list.length) emptyRow(table, 6, "No hostnames yet.");
}

// ---------- start ----------

const PAGES = {
  certificates: certificatesPage,
  "mtls-rule": mtlsRulePage,
  rules: rulesPage,
  events: eventsPage,
  hostnames: hostnamesPage,
};

async function start() {
  const main = $("main");
  if (!main?.dataset.page) return;
  if (!canWrite) document.querySelectorAll("[data-write]").forEach((el) => (el.hidden = true));
  try {
    if (!(await loadZones())) {
      noZone();
      return;
    }
    await PAGES[main.dataset.page]?.();
  } catch (error) {
    showError(error);
  } finally {
    document.body.dataset.ready = "true";
  }
}

start();
