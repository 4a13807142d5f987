// The Cordon web console: a single page over the /v1 API, with the user's key.
// No framework and no build step. Every value from the API goes into the page through
// textContent or attributes, never as HTML.

const TOKEN_KEY = "cordon.token";
const app = document.getElementById("app");

// ---------- small DOM helpers ----------

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "onclick" || k === "onsubmit" || k === "onchange") el.addEventListener(k.slice(2), v);
    else if (k === "testid") el.dataset.testid = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function pill(text, kind) {
  return h("span", { class: `pill ${kind ?? text ?? ""}` }, text ?? "–");
}

function when(ts) {
  if (!ts) return "–";
  const d = new Date(ts);
  return isNaN(d) ? ts : d.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

// A timestamp for a table cell: on one line.
function ts(v) {
  return h("span", { class: "ts" }, when(v));
}

// A reason code: may wrap after an underscore, never inside a word.
function code(text) {
  if (text === null || text === undefined || text === "") return "–";
  const parts = String(text).split("_");
  return h("span", { class: "reason" }, parts.flatMap((p, i) => (i ? ["_", h("wbr"), p] : [p])));
}

function num(v, digits = 2) {
  if (v === null || v === undefined) return "–";
  if (typeof v !== "number") return String(v);
  return Number.isInteger(v) ? v.toLocaleString("en") : v.toFixed(digits);
}

// Money: two decimals, or three significant digits for amounts under a cent (a test
// week's cost is a fraction of one).
function money(v) {
  if (v === null || v === undefined) return "–";
  if (v === 0 || Math.abs(v) >= 0.01) return v.toFixed(2);
  // Three significant digits, written out in full (0.0000000406, not 4.06e-8).
  const digits = Math.min(12, 2 - Math.floor(Math.log10(Math.abs(v))));
  return v.toFixed(digits);
}

function pct(v) {
  return v === null || v === undefined ? "–" : `${(v * 100).toFixed(1)} %`;
}

function table(headers, rows, empty = "Nothing yet.") {
  if (!rows.length) return h("p", { class: "muted" }, empty);
  return h("table", {},
    h("thead", {}, h("tr", {}, headers.map((x) => h("th", { class: x.endsWith("#") ? "num" : "" }, x.replace(/#$/, ""))))),
    h("tbody", {}, rows.map((r) => h("tr", {}, r.map((c) => (c instanceof Node && c.tagName === "TD" ? c : h("td", {}, c)))))));
}

function errorBox(err, testid) {
  const text = err && err.code ? `${err.code}: ${err.message}` : String(err && err.message ? err.message : err);
  return h("div", { class: "error", testid: testid ?? "error" }, text);
}

// ---------- the API ----------

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function api(path, options = {}) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const headers = { Accept: "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method: options.method ?? "GET",
    headers,
    body: options.body === undefined ? undefined : JSON.stringify(options.body),
  });
  const text = await response.text();
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = null;
  }
  if (!response.ok) {
    const e = body && body.error ? body.error : {};
    const error = new ApiError(response.status, e.code ?? `HTTP_${response.status}`, e.message ?? text);
    if (response.status === 401 && !options.keepSession) {
      sessionStorage.removeItem(TOKEN_KEY);
      sessionStorage.setItem("cordon.loginError", `${error.code}: ${error.message}`);
      location.hash = "#/login";
    }
    throw error;
  }
  return body;
}

// A section that loads on its own and shows its own error (a 403 on one part of a
// page leaves the rest readable).
function section(title, load, testid) {
  const body = h("div", { testid }, h("p", { class: "muted" }, "Loading…"));
  const wrap = h("section", { class: "card" }, h("h2", {}, title), body);
  Promise.resolve()
    .then(load)
    .then((content) => body.replaceChildren(content))
    .catch((err) => body.replaceChildren(errorBox(err)));
  return wrap;
}

// ---------- layout and routing ----------

const NAV = [
  ["sessions", "Sessions"],
  ["runs", "Runs"],
  ["dlq", "Dead letters"],
  ["egress", "Egress decisions"],
  ["credentials", "Credentials"],
  ["metrics", "SRE metrics"],
];

function shell(active, ...content) {
  const nav = h("nav", {},
    h("div", { class: "brand" }, "Cordon"),
    NAV.map(([id, label]) => h("a", { href: `#/${id}`, class: id === active ? "active" : "", testid: `nav-${id}` }, label)),
    h("div", { class: "foot" },
      h("div", { class: "who", testid: "caller" }, "Signed in with key ", h("code", {}, keyHint())),
      h("button", { testid: "logout", onclick: () => { sessionStorage.removeItem(TOKEN_KEY); location.hash = "#/login"; } }, "Log out")));
  return h("div", { class: "shell" }, nav, h("main", {}, content));
}

// The signed-in key, by its first and last characters (never the whole token).
function keyHint() {
  const token = sessionStorage.getItem(TOKEN_KEY) ?? "";
  return token.length > 16 ? `${token.slice(0, 7)}…${token.slice(-4)}` : "…";
}

const routes = [
  [/^#\/login$/, login],
  [/^#\/sessions$/, sessions],
  [/^#\/sessions\/([\w-]+)$/, sessionPage],
  [/^#\/runs$/, runs],
  [/^#\/runs\/([\w-]+)$/, runPage],
  [/^#\/dlq$/, deadLetters],
  [/^#\/egress$/, egress],
  [/^#\/credentials$/, credentials],
  [/^#\/metrics$/, metricsPage],
];

function render() {
  const hash = location.hash || "#/sessions";
  if (!sessionStorage.getItem(TOKEN_KEY) && hash !== "#/login") {
    location.hash = "#/login";
    return;
  }
  for (const [pattern, view] of routes) {
    const m = hash.match(pattern);
    if (m) {
      app.replaceChildren(view(...m.slice(1)));
      return;
    }
  }
  location.hash = "#/sessions";
}

window.addEventListener("hashchange", render);

// ---------- views ----------

function login() {
  const input = h("input", { type: "password", id: "token", autocomplete: "off", placeholder: "cdn_…", testid: "login-token" });
  const message = h("div");
  const previous = sessionStorage.getItem("cordon.loginError");
  if (previous) {
    message.append(errorBox({ message: previous }, "login-error"));
    sessionStorage.removeItem("cordon.loginError");
  }
  const form = h("form", {
    onsubmit: async (event) => {
      event.preventDefault();
      const token = input.value.trim();
      if (!token) return;
      sessionStorage.setItem(TOKEN_KEY, token);
      try {
        await api("/v1/sessions?limit=1", { keepSession: true });
        location.hash = "#/sessions";
      } catch (err) {
        sessionStorage.removeItem(TOKEN_KEY);
        message.replaceChildren(errorBox(err, "login-error"));
      }
    },
  },
  h("label", { for: "token" }, "API key"),
  input,
  h("button", { class: "primary", type: "submit", testid: "login-submit" }, "Log in"));
  return h("div", { class: "login card" },
    h("h1", {}, "Cordon console"),
    h("p", { class: "muted" }, "Paste an API key. It stays in this tab only (session storage) and is sent to this server's API."),
    form, message);
}

function sessions() {
  const select = h("select", { testid: "phase-filter" },
    ["", "created", "active", "checkpointed", "suspended", "closed"].map((p) => h("option", { value: p }, p || "any phase")));
  const list = h("div");
  const load = () => {
    const phase = select.value ? `&phase=${encodeURIComponent(select.value)}` : "";
    list.replaceChildren(section("Sessions", async () => {
      const body = await api(`/v1/sessions?limit=200${phase}`);
      return table(["Session", "Phase", "Class", "Env", "Outcome", "Created"],
        body.items.map((s) => [
          h("a", { href: `#/sessions/${s.id}`, testid: `session-link-${s.id}` }, h("code", {}, s.id)),
          pill(s.phase), s.workload_class, s.environment, s.outcome ? pill(s.outcome) : "–", ts(s.created_at),
        ]), "No sessions.");
    }, "sessions-table"));
  };
  select.addEventListener("change", load);
  load();
  return shell("sessions", h("h1", {}, "Sessions"), h("div", { class: "row" }, h("label", {}, "Phase ", select)), list);
}

function sessionPage(id) {
  const head = section("Session", async () => {
    const s = await api(`/v1/sessions/${id}`);
    return h("dl", { class: "kv", testid: "session-summary" },
      h("dt", {}, "id"), h("dd", {}, h("code", {}, s.id)),
      h("dt", {}, "phase"), h("dd", { testid: "session-phase" }, pill(s.phase)),
      h("dt", {}, "outcome"), h("dd", {}, s.outcome ? pill(s.outcome) : "–"),
      h("dt", {}, "workload class"), h("dd", {}, s.workload_class),
      h("dt", {}, "environment"), h("dd", {}, s.environment),
      h("dt", {}, "owner"), h("dd", {}, h("code", {}, s.owner)),
      h("dt", {}, "labels"), h("dd", {}, Object.entries(s.labels).map(([k, v]) => `${k}=${v}`).join(", ") || "–"),
      h("dt", {}, "created"), h("dd", {}, when(s.created_at)));
  }, "session-head");
  const timeline = section("Phase timeline", async () => {
    const body = await api(`/v1/sessions/${id}/events?limit=500`);
    return h("ol", { class: "timeline" }, body.items.map((e) =>
      h("li", { testid: `event-${e.to}` },
        pill(e.to), " ", h("span", { class: "muted" }, `${when(e.at)} · ${e.from ? `from ${e.from}` : "created"} · by `), h("code", {}, e.actor),
        e.reason ? h("div", {}, e.reason) : null)));
  }, "timeline");
  const execs = section("Exec history", async () => {
    const body = await api(`/v1/evidence?session=${id}&kind=exec&limit=200`);
    const ended = body.entries.filter((e) => e.fields.exit_code !== undefined && e.fields.exit_code !== null);
    return table(["At", "Exit", "Duration ms#", "Reason", "Step"], ended.map((e) => [
      ts(e.at), pill(String(e.fields.exit_code), e.fields.exit_code === 0 ? "ok" : "bad"),
      h("td", { class: "num" }, num(e.fields.duration_ms)), code(e.fields.reason), e.fields.step ?? "–",
    ]), "No commands ran.");
  }, "exec-history");
  const processes = section("Processes", async () => {
    const body = await api(`/v1/sessions/${id}/processes`);
    return table(["Pid#", "Command", "State", "Exit", "Started"], body.items.map((p) => [
      h("td", { class: "num" }, p.pid), h("code", {}, p.argv.join(" ")), pill(p.state), p.exit_code ?? "–", ts(p.started_at),
    ]), "No processes.");
  }, "processes");
  const files = section("Files", async () => {
    const body = await api(`/v1/sessions/${id}/files`);
    return table(["Path", "Kind", "Size#", "Modified"], body.items.map((f) => [
      h("code", {}, f.path), f.kind, h("td", { class: "num" }, num(f.size)), ts(f.mtime),
    ]), "The workspace is empty.");
  }, "files");
  const versions = section("Versions", async () => {
    const body = await api(`/v1/sessions/${id}/versions`);
    return table(["Version", "Origin", "Summary", "Files#", "Bytes#", "Created"], body.versions.map((v) => [
      h("code", {}, v.id), v.origin, v.summary || "–", h("td", { class: "num" }, num(v.stats.files)),
      h("td", { class: "num" }, num(v.stats.bytes)), ts(v.created_at),
    ]), "No versions.");
  }, "versions");
  const leases = section("Credential leases", async () => {
    const body = await api(`/v1/sessions/${id}/leases`);
    return leaseTable(body.items, false);
  }, "leases");
  const evidence = section("Evidence (with inclusion proofs)", () => evidenceTable(id), "evidence");
  return shell("sessions", h("h1", {}, "Session ", h("code", {}, id)), head, timeline, execs, evidence, processes, files, versions, leases);
}

// ---------- evidence proofs, checked here ----------

function hex(bytes) {
  return Array.from(new Uint8Array(bytes), (b) => b.toString(16).padStart(2, "0")).join("");
}

function unhex(text) {
  const out = new Uint8Array(text.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(text.substr(i * 2, 2), 16);
  return out;
}

async function sha256(...parts) {
  const total = parts.reduce((n, p) => n + p.length, 0);
  const buf = new Uint8Array(total);
  let at = 0;
  for (const p of parts) {
    buf.set(p, at);
    at += p.length;
  }
  return new Uint8Array(await crypto.subtle.digest("SHA-256", buf));
}

// RFC 9162, 2.1.3.2: the root an inclusion proof leads to.
async function rootFromProof(index, size, leafHash, proof) {
  if (index >= size) return null;
  let fn = index;
  let sn = size - 1;
  let r = leafHash;
  const node = new Uint8Array([1]);
  for (const p of proof) {
    if (sn === 0) return null;
    if (fn % 2 === 1 || fn === sn) {
      r = await sha256(node, p, r);
      if (fn % 2 === 0) {
        while (fn % 2 === 0 && fn !== 0) {
          fn = Math.floor(fn / 2);
          sn = Math.floor(sn / 2);
        }
      }
    } else {
      r = await sha256(node, r, p);
    }
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  return sn === 0 ? r : null;
}

async function proofStatus(entry, checkpoint) {
  if (!window.crypto || !crypto.subtle) return ["not checked (needs HTTPS or localhost)", "warn"];
  if (!checkpoint || entry.index >= checkpoint.size) return ["pending checkpoint", "pending"];
  const leaf = await sha256(new Uint8Array([0]), new TextEncoder().encode(entry.leaf));
  if (hex(leaf) !== entry.leaf_hash) return ["leaf mismatch", "mismatch"];
  const proof = await api(`/v1/evidence/entries/${entry.index}/proof?size=${checkpoint.size}`);
  const root = await rootFromProof(entry.index, checkpoint.size, leaf, proof.proof.map(unhex));
  return root && hex(root) === checkpoint.root ? ["verified", "verified"] : ["mismatch", "mismatch"];
}

async function evidenceTable(sessionId) {
  const [list, checkpoint] = await Promise.all([
    api(`/v1/evidence?session=${sessionId}&limit=100`),
    api("/v1/evidence/checkpoint").catch(() => null),
  ]);
  const rows = [];
  for (const e of list.entries) {
    const status = h("span", {}, "checking…");
    proofStatus(e, checkpoint)
      .then(([text, kind]) => status.replaceChildren(pill(text, kind)))
      .catch((err) => status.replaceChildren(pill(err.code ?? "error", "bad")));
    const fields = Object.entries(e.fields).filter(([k]) => k !== "argv_digest").map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`).join(" ");
    rows.push([h("td", { class: "num" }, e.index), e.kind, ts(e.at), h("span", { class: "mono" }, fields), status]);
  }
  const head = checkpoint
    ? h("p", { class: "muted" }, `Checked against the signed checkpoint of ${checkpoint.size} entries (root ${checkpoint.root.slice(0, 16)}…).`)
    : h("p", { class: "muted" }, "No signed checkpoint yet.");
  return h("div", {}, head, table(["#", "Kind", "At", "Fields", "Proof"], rows, "No evidence for this session."));
}

// ---------- workflows ----------

function runs() {
  return shell("runs", h("h1", {}, "Workflow runs"), section("Runs", async () => {
    const body = await api("/v1/runs?limit=200");
    return table(["Run", "Workflow", "Status", "Reason", "Session", "Created"], body.items.map((r) => [
      h("a", { href: `#/runs/${r.id}`, testid: `run-link-${r.id}` }, h("code", {}, r.id)), r.name, pill(r.status), code(r.reason),
      r.session_id ? h("a", { href: `#/sessions/${r.session_id}` }, h("code", {}, r.session_id)) : "–", ts(r.created_at),
    ]), "No runs.");
  }, "runs-table"));
}

function runPage(id) {
  const head = section("Run", async () => {
    const r = await api(`/v1/runs/${id}`);
    return h("div", {},
      h("dl", { class: "kv" },
        h("dt", {}, "workflow"), h("dd", {}, r.name),
        h("dt", {}, "status"), h("dd", { testid: "run-status" }, pill(r.status)),
        h("dt", {}, "reason"), h("dd", {}, r.reason ? [code(r.reason), `: ${r.message ?? ""}`] : "–"),
        h("dt", {}, "session"), h("dd", {}, r.session_id ? h("a", { href: `#/sessions/${r.session_id}` }, r.session_id) : "–")),
      h("h2", {}, "Steps"),
      table(["Step", "Status", "Attempt#", "Error"], (r.steps ?? []).concat(r.compensations ?? []).map((s) => [
        s.name, pill(s.status), h("td", { class: "num" }, s.attempt), s.error ? [code(s.error.reason), `: ${s.error.message}`] : "–",
      ])));
  }, "run-head");
  const journal = section("Journal", async () => {
    const body = await api(`/v1/runs/${id}/journal?limit=1000`);
    return table(["#", "At", "Step", "Attempt#", "Kind", "Reason"], body.items.map((e) => [
      h("td", { class: "num" }, e.seq), ts(e.at), e.step ?? "–", h("td", { class: "num" }, e.attempt), pill(e.kind), code(e.reason),
    ]));
  }, "journal");
  return shell("runs", h("h1", {}, "Run ", h("code", {}, id)), head, journal);
}

// What a dead letter's step tried, in one line.
function describeRequest(summary) {
  if (!summary || typeof summary !== "object") return String(summary ?? "–");
  if (summary.method && summary.url) return `${summary.method} ${summary.url}`;
  if (summary.egress) return `${summary.egress.method ?? ""} ${summary.egress.host}:${summary.egress.port}${summary.egress.path ?? ""}`.trim();
  if (Array.isArray(summary.argv)) return summary.argv.join(" ");
  return JSON.stringify(summary);
}

function deadLetters() {
  const result = h("div", { testid: "dlq-result" });
  const list = h("div");
  const act = async (entry, what) => {
    try {
      const body = await api(`/v1/dlq/${entry.id}/${what}`, { method: "POST" });
      result.replaceChildren(h("div", { class: "notice" },
        h("code", {}, body.id), ` is ${body.status}`, body.resolved_by ? ` (by ${body.resolved_by})` : "", ". ",
        what === "redrive" ? "The step runs again: see run " : "The run fails and compensates: see run ",
        h("a", { href: `#/runs/${body.run_id}` }, h("code", {}, body.run_id)), "."));
    } catch (err) {
      result.replaceChildren(errorBox(err, "dlq-error"));
    }
    load();
  };
  const load = () => list.replaceChildren(section("Dead-letter queue", async () => {
    const body = await api("/v1/dlq?status=all&limit=200");
    return table(["Entry / run", "Step", "Reason", "Request", "Status", "Created / resolved", ""], body.items.map((e) => [
      [h("code", { class: "id" }, e.id), h("div", { class: "sub" }, "run ", h("a", { href: `#/runs/${e.run_id}` }, h("code", { class: "id" }, e.run_id)))],
      e.step, code(e.reason),
      h("span", { class: "mono wrap" }, describeRequest(e.summary)), h("span", { testid: `dlq-status-${e.id}` }, pill(e.status)),
      [ts(e.created_at), e.resolved_at ? h("div", { class: "sub" }, ts(e.resolved_at), " by ", h("code", {}, e.resolved_by ?? "?")) : null],
      e.status === "open"
        ? h("span", { class: "actions" },
          h("button", { class: "primary", testid: `redrive-${e.id}`, onclick: () => act(e, "redrive") }, "Redrive"),
          h("button", { class: "danger", testid: `discard-${e.id}`, onclick: () => act(e, "discard") }, "Discard"))
        : "",
    ]), "Nothing is waiting: no step was blocked by policy.");
  }, "dlq-table"));
  load();
  return shell("dlq", h("h1", {}, "Dead letters"),
    h("p", { class: "muted" }, "Steps a policy refused. Redrive after changing the policy, or discard: the run then fails and compensates."),
    result, list);
}

function egress() {
  return shell("egress", h("h1", {}, "Egress decisions"), section("Latest decisions", async () => {
    const body = await api("/v1/egress/decisions?limit=1000");
    const latest = body.decisions.slice(-200).reverse();
    return table(["#", "At", "Session", "Request", "Decision", "Upstream#"], latest.map((d) => [
      h("td", { class: "num" }, d.seq), ts(d.at), h("a", { href: `#/sessions/${d.session_id}` }, h("code", { class: "id" }, d.session_id)),
      h("span", { class: "mono wrap" }, `${d.method ?? d.kind} ${d.host}:${d.port}${d.path ?? ""}`), pill(d.reason, d.reason === "EGRESS_ALLOWED" ? "ok" : "bad"),
      h("td", { class: "num" }, d.status ?? "–", h("div", { class: "sub" }, `${num(d.bytes_sent)}\u00a0B\u00a0out, ${num(d.bytes_received)}\u00a0B\u00a0in`)),
    ]), "No requests left a sandbox.");
  }, "egress-table"));
}

function credentials() {
  return shell("credentials", h("h1", {}, "Credentials"),
    h("p", { class: "muted" }, "Metadata only: a secret's value never leaves the server, and is injected only at the egress gateway."),
    section("Secrets", async () => {
      const body = await api("/v1/secrets");
      return table(["Secret", "Name", "Service class", "Header", "Format", "Created"], body.items.map((s) => [
        h("code", {}, s.id), s.name, s.service_class, h("code", {}, s.header), h("code", {}, s.format ?? "{secret}"), ts(s.created_at),
      ]), "No secrets.");
    }, "secrets-table"),
    section("Credential leases", async () => {
      const body = await api("/v1/sessions?limit=200");
      const open = body.items.filter((s) => s.phase !== "closed").slice(0, 50);
      const lists = await Promise.all(open.map((s) => api(`/v1/sessions/${s.id}/leases`)));
      return leaseTable(lists.flatMap((l) => l.items), true);
    }, "leases-table"),
    h("p", { class: "muted" }, "Leases of sessions that are not closed (closing a session revokes its leases); each session's page lists its own."));
}

function leaseTable(leases, withSession) {
  const state = (l) => (l.revoked_at ? pill("revoked", "bad") : l.live ? pill("live", "ok") : pill("expired", "warn"));
  return table(["Lease", "Secret"].concat(withSession ? ["Session"] : [], ["State", "Issued", "Expires", "Revoked"]), leases.map((l) => [
    h("code", {}, l.id), l.secret_name,
    ...(withSession ? [h("a", { href: `#/sessions/${l.session_id}` }, h("code", {}, l.session_id))] : []),
    state(l), ts(l.issued_at), ts(l.expires_at), l.revoked_at ? [ts(l.revoked_at), h("div", { class: "muted" }, l.revoke_reason ?? "")] : "–",
  ]), "No leases.");
}

// ---------- SRE metrics ----------

function barChart(title, items, format = num) {
  const width = 460;
  const rowH = 22;
  const height = Math.max(1, items.length) * rowH + 8;
  const max = Math.max(1e-12, ...items.map(([, v]) => v ?? 0));
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("width", String(width));
  svg.setAttribute("height", String(height));
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", title);
  items.forEach(([label, value], i) => {
    const y = 4 + i * rowH;
    const text = document.createElementNS(ns, "text");
    text.setAttribute("x", "0");
    text.setAttribute("y", String(y + 14));
    text.setAttribute("font-size", "12");
    text.textContent = label;
    const bar = document.createElementNS(ns, "rect");
    bar.setAttribute("x", "150");
    bar.setAttribute("y", String(y + 3));
    bar.setAttribute("height", "14");
    bar.setAttribute("width", String(Math.max(1, ((value ?? 0) / max) * (width - 230))));
    bar.setAttribute("fill", "#3b5bdb");
    const val = document.createElementNS(ns, "text");
    val.setAttribute("x", String(156 + ((value ?? 0) / max) * (width - 230)));
    val.setAttribute("y", String(y + 14));
    val.setAttribute("font-size", "12");
    val.textContent = format(value);
    svg.append(text, bar, val);
  });
  return h("figure", { class: "card" }, h("figcaption", {}, title), svg);
}

function stat(label, value, testid) {
  return h("div", { class: "stat", testid }, h("div", { class: "label" }, label), h("div", { class: "value" }, value));
}

function metricsPage() {
  const days = h("select", { testid: "metrics-window" }, [["1", "last day"], ["7", "last 7 days"], ["28", "last 28 days"]].map(([v, l]) => h("option", { value: v, selected: v === "7" }, l)));
  const body = h("div");
  const load = () => {
    const to = new Date();
    const from = new Date(to.getTime() - Number(days.value) * 86400000);
    body.replaceChildren(section("Service health", async () => {
      let m;
      try {
        m = await api(`/v1/metrics/sre?from=${encodeURIComponent(from.toISOString())}&to=${encodeURIComponent(to.toISOString())}&group_by=workload_class`);
      } catch (err) {
        if (err.status === 404) return h("p", { class: "muted" }, "Metrics are not available on this server.");
        throw err;
      }
      const t = m.total;
      const cur = m.currency;
      return h("div", { testid: "metrics-body" },
        h("div", { class: "stats" },
          stat("Session success rate", pct(t.sessions.success_rate), "stat-success"),
          stat("Sessions closed", num(t.sessions.closed)),
          stat("Mean time to recovery", t.recovery.mttr_seconds === null ? "–" : `${num(t.recovery.mttr_seconds)} s`),
          stat("Policy-block rate", pct(t.policy_blocks.block_rate)),
          stat("False-positive ratio", pct(t.policy_blocks.false_positive_ratio)),
          stat("Restore p90", t.artifact_restore.p90_seconds === null ? "–" : `${num(t.artifact_restore.p90_seconds, 3)} s`),
          stat(`Cost (${cur})`, money(t.cost.total)),
          stat(`Cost per completed workflow (${cur})`, money(t.workflows.cost_per_completed))),
        h("div", { class: "row" },
          barChart("Session success rate by workload class", m.groups.map((g) => [g.key, g.sessions.success_rate]), pct),
          barChart(`Cost by workload class (${cur})`, m.groups.map((g) => [g.key, g.cost.total]), money),
          barChart("Top egress denial causes", t.egress_denials.map((d) => [`${d.destination}`.slice(0, 22), d.count])),
          barChart("Policy blocks by workload class", m.groups.map((g) => [g.key, g.policy_blocks.blocks]))),
        h("h2", {}, "By workload class"),
        table(["Class", "Closed#", "Success", "Incidents#", "MTTR s#", "Blocks#", "Block rate", "Cost#"], m.groups.map((g) => [
          g.key, h("td", { class: "num" }, g.sessions.closed), pct(g.sessions.success_rate), h("td", { class: "num" }, g.recovery.incidents),
          h("td", { class: "num" }, num(g.recovery.mttr_seconds)), h("td", { class: "num" }, g.policy_blocks.blocks), pct(g.policy_blocks.block_rate),
          h("td", { class: "num" }, money(g.cost.total)),
        ])),
        h("h2", {}, "Top egress denial causes"),
        table(["Reason", "Destination", "Count#"], t.egress_denials.map((d) => [code(d.reason), h("code", {}, d.destination), h("td", { class: "num" }, d.count)]), "No denials."));
    }, "metrics"),
    section("Service-level objectives", async () => {
      const s = await api("/v1/metrics/slo");
      return table(["Objective", "Class", "Target", "Attained", "Budget left", "Burn 1h#", "Burn 6h#", "Burn 3d#"], s.slos.map((o) => [
        o.name, o.workload_class, pct(o.objective), pct(o.attainment),
        pill(pct(o.error_budget_remaining), o.error_budget_remaining < 0 ? "bad" : o.error_budget_remaining < 0.25 ? "warn" : "ok"),
        h("td", { class: "num" }, num(o.burn_rates["1h"])), h("td", { class: "num" }, num(o.burn_rates["6h"])), h("td", { class: "num" }, num(o.burn_rates["3d"])),
      ]), "No objective has events yet.");
    }, "slo"));
  };
  days.addEventListener("change", load);
  load();
  const reportError = h("div");
  return shell("metrics", h("h1", {}, "SRE metrics"), h("div", { class: "row toolbar" }, h("label", {}, "Window ", days),
    h("button", { testid: "weekly-report", onclick: () => weeklyReport(reportError) }, "Download the weekly report (HTML)")), reportError, body);
}

// The last complete week's report, saved as the self-contained HTML page the API makes
// (opened from here it would inherit this page's CSP, which refuses its inline style).
async function weeklyReport(errors) {
  errors.replaceChildren();
  try {
    const response = await fetch("/v1/reports/weekly?format=html", { headers: { Authorization: `Bearer ${sessionStorage.getItem(TOKEN_KEY)}` } });
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      const e = body.error ?? {};
      throw new ApiError(response.status, e.code ?? `HTTP_${response.status}`, e.message ?? response.statusText);
    }
    const url = URL.createObjectURL(await response.blob());
    h("a", { href: url, download: "cordon-weekly-report.html" }).click();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
  } catch (err) {
    errors.replaceChildren(errorBox(err, "report-error"));
  }
}

render();
