// search-service's page: search, explain, streamed cited answers, collections. No framework, no build step.
// Everything the server sends is put into the page as text (textContent / createTextNode), never as HTML.
// Offsets in responses (highlight spans, citation spans) count Unicode code points, as Python does; the page
// slices with Array.from(text), which counts the same way (JavaScript string indices count UTF-16 units).

const CONFIG = JSON.parse(document.getElementById("ui-config").textContent);
const $ = (id) => document.getElementById(id);
// The API's root is the folder this page sits in (/ui → /), so the page also works behind a path prefix.
const API_ROOT = new URL(".", location.href);
const apiURL = (path) => new URL(path.replace(/^\//, ""), API_ROOT);

// ---- API access: keys live in this module's memory only (never in the URL or browser storage) ------------
const keys = { api: null, admin: null };

class ApiError extends Error {
  constructor(status, message, details) {
    super(message);
    this.status = status;
    this.details = details || null;
  }
}

async function errorFrom(resp) {
  let message = `${resp.status} ${resp.statusText}`;
  let details = null;
  try {
    const body = await resp.json();
    if (body && body.error) {
      message = body.error.message || message;
      details = body.error.details || null;
    } else if (body && body.detail) {
      message = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
    }
  } catch (_) { /* not JSON: keep the status line */ }
  return new ApiError(resp.status, message, details);
}

// fetch() with the key this page holds; on 401 (or 403 on an admin operation) ask for a key and retry.
async function request(method, path, body, { admin = false } = {}) {
  for (let attempt = 0; ; attempt++) {
    const headers = {};
    const key = admin ? (keys.admin || keys.api) : (keys.api || keys.admin);
    if (key) headers["Authorization"] = `Bearer ${key}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const resp = await fetch(apiURL(path), { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    if (resp.ok) return resp;
    const err = await errorFrom(resp);
    const needsKey = resp.status === 401 || (admin && resp.status === 403);
    if (!needsKey || attempt >= 3) throw err;
    const entered = await askKey(admin ? "admin" : "api", err.message);
    if (!entered) throw err;
  }
}

async function getJSON(path) { return (await request("GET", path)).json(); }
async function postJSON(path, body, opts) { return (await request("POST", path, body, opts)).json(); }

// ---- the key dialog ---------------------------------------------------------------------------------------
function askKey(kind, reason) {
  const dialog = $("key-dialog");
  $("key-dialog-title").textContent = kind === "admin" ? "Admin key" : "API key";
  $("key-dialog-reason").textContent = reason || "";
  $("key-input").value = "";
  return new Promise((resolve) => {
    const done = (ok) => {
      $("key-form").removeEventListener("submit", onSubmit);
      $("key-cancel").removeEventListener("click", onCancel);
      dialog.close();
      resolve(ok);
    };
    const onSubmit = (ev) => {
      ev.preventDefault();
      const value = $("key-input").value.trim();
      if (!value) return;
      keys[kind] = value;
      $("key-button").hidden = false;
      done(true);
    };
    const onCancel = () => done(false);
    $("key-form").addEventListener("submit", onSubmit);
    $("key-cancel").addEventListener("click", onCancel);
    dialog.showModal();
    $("key-input").focus();
  });
}

// ---- messages ---------------------------------------------------------------------------------------------
function showError(err) {
  const el = $("message");
  el.textContent = err instanceof ApiError ? `Error ${err.status}: ${err.message}` : `Error: ${err.message || err}`;
  el.className = "message error";
  el.hidden = false;
}
function showInfo(text) {
  const el = $("message");
  el.textContent = text;
  el.className = "message info";
  el.hidden = false;
}
function clearMessage() { $("message").hidden = true; $("message").textContent = ""; }

// ---- text with marked spans -------------------------------------------------------------------------------
// Appends `text` to `el`, wrapping each span ({start, end} in code points) with `wrap(fragmentText, span)`.
function appendMarked(el, text, spans, wrap) {
  const cps = Array.from(text || "");
  let pos = 0;
  for (const sp of [...(spans || [])].sort((a, b) => a.start - b.start)) {
    if (sp.start < pos || sp.end > cps.length || sp.end <= sp.start) continue;
    if (sp.start > pos) el.append(cps.slice(pos, sp.start).join(""));
    el.append(wrap(cps.slice(sp.start, sp.end).join(""), sp));
    pos = sp.end;
  }
  if (pos < cps.length) el.append(cps.slice(pos).join(""));
}
const mark = (t) => { const m = document.createElement("mark"); m.textContent = t; return m; };
const el = (tag, props = {}, ...children) => {
  const node = document.createElement(tag);
  Object.assign(node, props);
  node.append(...children);
  return node;
};
const fmt = (x, digits = 3) => (typeof x === "number" ? x.toFixed(digits) : String(x));

// ---- state in the URL -------------------------------------------------------------------------------------
let shownSearch = location.search;      // the query string the page shows (popstate compares with it)

// alpha: the server applies the collection's model's default unless the person (or the URL) chose one
let alphaChosen = false;
const collectionModels = {};            // collection name -> its embedding model (from GET /collections)

function defaultAlpha() {
  return CONFIG.default_alpha ?? CONFIG.model_alphas[collectionModels[$("collection").value]] ?? 0.5;
}

function formState() {
  return {
    collection: $("collection").value, q: $("query").value, mode: $("mode").value,
    fusion: $("fusion").value, alpha: alphaChosen ? $("alpha").value : "", limit: $("limit").value,
  };
}

function pushState(view) {
  const params = new URLSearchParams();
  if (view === "collections") params.set("view", "collections");
  else for (const [k, v] of Object.entries(formState())) if (v !== "" && v != null) params.set(k, v);
  const url = `${location.pathname}?${params}`;
  if (url !== location.pathname + location.search) history.pushState(null, "", url);
  shownSearch = location.search;
}

function ensureOption(select, value, label) {
  if (![...select.options].some((o) => o.value === value)) select.append(el("option", { value, textContent: label || value }));
  select.value = value;
}

function applyParams(params) {
  if (params.get("collection")) ensureOption($("collection"), params.get("collection"));
  if (params.get("q") !== null) $("query").value = params.get("q");
  for (const name of ["mode", "fusion"]) {
    const v = params.get(name);
    if (v && [...$(name).options].some((o) => o.value === v)) $(name).value = v;
  }
  alphaChosen = params.get("alpha") !== null && params.get("alpha") !== "";
  $("alpha").value = alphaChosen ? params.get("alpha") : defaultAlpha();
  if (params.get("limit")) $("limit").value = params.get("limit");
  syncControls();
}

// ---- views ------------------------------------------------------------------------------------------------
function showView(name) {
  for (const v of ["search", "collections"]) {
    $(`view-${v}`).hidden = v !== name;
    const tab = $(`tab-${v}`);
    if (v === name) tab.setAttribute("aria-current", "page"); else tab.removeAttribute("aria-current");
  }
  if (name === "collections") loadCollectionsTable().catch(showError);
}

function syncControls() {
  const hybrid = $("mode").value === "hybrid";
  $("fusion").disabled = !hybrid;
  $("alpha").disabled = !hybrid;
  $("alpha-value").textContent = Number($("alpha").value).toFixed(2);
}

// ---- collections ------------------------------------------------------------------------------------------
async function loadCollectionNames() {
  const body = await getJSON("/collections");
  const names = body.collections.map((c) => c.name);
  for (const c of body.collections) collectionModels[c.name] = c.embedding_model;
  for (const id of ["collection", "upload-collection"]) {
    const select = $(id);
    const keep = select.value;
    select.replaceChildren(...names.map((n) => el("option", { value: n, textContent: n })));
    if (keep) ensureOption(select, keep);
  }
  return body.collections;
}

async function loadCollectionsTable() {
  const list = await loadCollectionNames();
  const rows = await Promise.all(list.map(async (c) => {
    let d = null;
    try { d = await getJSON(`/collections/${encodeURIComponent(c.name)}`); } catch (_) { /* shown as '?' */ }
    const link = el("a", { href: `?collection=${encodeURIComponent(c.name)}`, textContent: c.name });
    link.addEventListener("click", (ev) => {
      ev.preventDefault();
      ensureOption($("collection"), c.name);
      showView("search");
      pushState("search");
      $("query").focus();
    });
    const del = el("button", { type: "button", className: "danger", textContent: "Delete" });
    del.setAttribute("aria-label", `Delete collection ${c.name}`);
    del.addEventListener("click", () => deleteCollection(c.name));
    const extra = (d?.extra_embedding_models || []).map((e) => ` + ${e.embedding_model}`).join("");
    const model = (c.embedding_model || c.model_id || `(${c.dim})`) + extra;
    const state = !d ? "" : !d.model_loaded ? ": not loaded by this service" : !d.model_matches ? ": not the served build" : "";
    const tr = el("tr", {}, el("td", {}, link), el("td", { className: "num", textContent: d ? d.documents : "?" }),
      el("td", { className: "num", textContent: c.chunks }),
      el("td", { textContent: model + state, title: c.model_id || "" }), el("td", {}, del));
    tr.dataset.collection = c.name;
    return tr;
  }));
  $("collections-table").tBodies[0].replaceChildren(...rows);
  if (!rows.length) {
    $("collections-table").tBodies[0].append(el("tr", {}, el("td", { colSpan: 5, className: "muted",
      textContent: "No collections yet: create one below." })));
  }
}

async function deleteCollection(name) {
  if (!confirm(`Delete collection '${name}' and all its documents?`)) return;
  try {
    await request("DELETE", `/collections/${encodeURIComponent(name)}`, undefined, { admin: true });
    showInfo(`Deleted collection '${name}'.`);
    await loadCollectionsTable();
  } catch (err) { showError(err); }
}

async function createCollection(ev) {
  ev.preventDefault();
  clearMessage();
  const body = { name: $("new-name").value.trim() };
  if ($("new-chunk-words").value) body.chunk_words = Number($("new-chunk-words").value);
  if ($("new-embedding-model").value) body.embedding_model = $("new-embedding-model").value;
  if ($("new-extra-model").value) body.extra_embedding_models = [$("new-extra-model").value];
  try {
    await postJSON("/collections", body);
    showInfo(`Created collection '${body.name}'.`);
    $("create-form").reset();
    await loadCollectionsTable();
    $("upload-collection").value = body.name;
  } catch (err) { showError(err); }
}

// A JSONL line → the API's document: {id | _id, text, title?, metadata?} (BEIR's corpus.jsonl has _id).
function toDocument(obj, lineNo) {
  if (!obj || typeof obj !== "object" || Array.isArray(obj)) throw new Error(`line ${lineNo}: not a JSON object`);
  const id = obj.id ?? obj._id;
  if (id === undefined || id === null || id === "") throw new Error(`line ${lineNo}: no "id" (or "_id")`);
  if (typeof obj.text !== "string") throw new Error(`line ${lineNo}: no "text" string`);
  const doc = { id: String(id), text: obj.text };
  if (obj.title) doc.title = String(obj.title);
  if (obj.metadata && typeof obj.metadata === "object" && !Array.isArray(obj.metadata)
      && Object.keys(obj.metadata).length) doc.metadata = obj.metadata;
  return doc;
}

const UPLOAD_BATCH_DOCS = 64;
const UPLOAD_BATCH_BYTES = 512 * 1024;

async function uploadFile(ev) {
  ev.preventDefault();
  clearMessage();
  const file = $("upload-file").files[0];
  const collection = $("upload-collection").value;
  if (!file || !collection) return;
  const progress = $("upload-progress");
  const status = $("upload-status");
  const button = $("upload-button");
  let docs;
  try {
    const lines = (await file.text()).split(/\r?\n/);
    docs = [];
    lines.forEach((line, i) => {
      if (!line.trim()) return;
      let obj;
      try { obj = JSON.parse(line); } catch (e) { throw new Error(`line ${i + 1}: not valid JSON (${e.message})`); }
      docs.push(toDocument(obj, i + 1));
    });
    if (!docs.length) throw new Error("the file holds no documents");
  } catch (err) { showError(err); return; }
  button.disabled = true;
  progress.max = docs.length;
  progress.value = 0;
  let sent = 0, chunks = 0;
  try {
    while (sent < docs.length) {
      const batch = [];
      let bytes = 0;
      while (sent + batch.length < docs.length && batch.length < UPLOAD_BATCH_DOCS) {
        const doc = docs[sent + batch.length];
        const size = JSON.stringify(doc).length;
        if (batch.length && bytes + size > UPLOAD_BATCH_BYTES) break;
        batch.push(doc);
        bytes += size;
      }
      const res = await postJSON(`/collections/${encodeURIComponent(collection)}/documents`, { documents: batch });
      sent += batch.length;
      chunks += res.chunks;
      progress.value = sent;
      status.textContent = `${sent} / ${docs.length} documents`;
    }
    status.textContent = `${sent} / ${docs.length} documents (${chunks} chunks) uploaded into '${collection}'`;
    await loadCollectionsTable();
  } catch (err) {
    status.textContent = `stopped after ${sent} / ${docs.length} documents`;
    showError(err);
  } finally {
    button.disabled = false;
  }
}

// ---- search -----------------------------------------------------------------------------------------------
function searchBody() {
  const s = formState();
  const body = { collection: s.collection, query: s.q, limit: Number(s.limit) || 10, explain: true, highlight: true };
  if (s.mode === "hybrid") {
    body.fusion = s.fusion;
    if (alphaChosen) body.alpha = Number(s.alpha);
  }
  return body;
}

async function runSearch() {
  clearMessage();
  const s = formState();
  if (!s.collection || !s.q.trim()) return;
  $("results-summary").textContent = "Searching…";
  try {
    const body = await postJSON(`/search/${s.mode}`, searchBody());
    renderResults(body);
  } catch (err) {
    $("results").replaceChildren();
    $("results-summary").textContent = "";
    showError(err);
  }
}

function renderResults(body) {
  const results = body.results || [];
  const maxRaw = {};
  for (const r of results) for (const [name, e] of Object.entries(r.explain || {})) {
    maxRaw[name] = Math.max(maxRaw[name] || 0, e.score);
  }
  // the top-level explain: a retriever skipped (query script not covered by the model) or run with a warning
  const notes = Object.entries(body.explain?.retrievers || {}).filter(([, e]) => !e.used || e.warning)
    .map(([name, e]) => (e.used ? ` · ${name}: ${e.warning}` : ` · ${name} skipped: ${e.reason}`)).join("");
  const conf = body.explain?.confidence != null ? ` · confidence ${fmt(body.explain.confidence)}` : "";
  $("results-summary").textContent = (results.length
    ? `${results.length} of ${body.total} results${body.cached ? " (cached)" : ""}, ${fmt(body.took_ms, 1)} ms`
    : "No results.") + conf + notes;
  $("results").replaceChildren(...results.map((r, i) => renderResult(r, i, maxRaw)));
}

function renderResult(r, i, maxRaw) {
  const hl = r.highlight || null;
  const title = el("h3", { className: "title" });
  appendMarked(title, r.title || r.id, r.title ? hl?.title : [], mark);
  const snippet = el("p", { className: "snippet" });
  if (hl && hl.snippet) {
    if (hl.snippet.start > 0) snippet.append("… ");
    appendMarked(snippet, hl.snippet.text, hl.snippet.spans, mark);
    if (hl.snippet.end < Array.from(r.text).length) snippet.append(" …");
  } else {
    const cps = Array.from(r.text);
    snippet.append(cps.slice(0, 280).join("") + (cps.length > 280 ? " …" : ""));
  }
  const score = el("span", { className: "score", textContent: fmt(r.score) });
  score.title = "score (0-1)";
  const toggle = el("button", { type: "button", className: "secondary explain-toggle", textContent: "Explain" });
  toggle.setAttribute("aria-expanded", "false");
  toggle.setAttribute("aria-controls", `explain-${i}`);
  const panel = renderExplain(r, i, maxRaw);
  toggle.addEventListener("click", () => {
    const open = toggle.getAttribute("aria-expanded") !== "true";
    toggle.setAttribute("aria-expanded", String(open));
    panel.hidden = !open;
  });
  const meta = el("p", { className: "meta muted" }, `id ${r.id}`);
  // the words as the document writes them (highlight.terms are the analyzed forms: stems, morphemes)
  const words = [...new Set([...title.querySelectorAll("mark"), ...snippet.querySelectorAll("mark")]
    .map((m) => m.textContent.toLowerCase()))];
  if (words.length) meta.append(` · matched: ${words.join(", ")}`);
  const li = el("li", { className: "result", id: `result-${i}` },
    el("div", { className: "result-head" }, title, score), snippet, meta, toggle, panel);
  li.dataset.id = r.id;
  return li;
}

function bar(label, value, max, text) {
  const m = el("meter", { min: 0, max: max > 0 ? max : 1, value: Math.max(0, value) });
  m.setAttribute("aria-label", label);
  return el("div", { className: "bar-row" }, el("span", { className: "bar-label", textContent: label }), m,
    el("span", { className: "bar-text", textContent: text }));
}

function renderExplain(r, i, maxRaw) {
  const panel = el("div", { className: "explain", id: `explain-${i}` });
  panel.hidden = true;
  panel.append(bar("score", r.score, 1, fmt(r.score)));
  const ex = r.explain || {};
  for (const [name, e] of Object.entries(ex)) {
    panel.append(bar(name, e.score, maxRaw[name], `rank ${e.rank} · ${name === "keyword" ? "BM25" : "raw"} ${fmt(e.score)}`));
  }
  const missing = ["vector", "keyword"].filter((n) => n in maxRaw && !(n in ex));
  for (const name of missing) panel.append(el("p", { className: "muted", textContent: `${name}: not in its top candidates` }));
  return panel;
}

// ---- ask (RAG, streamed) ----------------------------------------------------------------------------------
async function* sseEvents(resp) {
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, cut);
      buf = buf.slice(cut + 2);
      let name = "message", data = null;
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) name = line.slice(6).trim();
        else if (line.startsWith("data:")) data = line.slice(5).trim();
      }
      if (data === null) continue;
      if (data === "[DONE]") return;
      yield [name, JSON.parse(data)];
    }
  }
}

function renderSources(sources) {
  $("sources").replaceChildren(...sources.map((s, k) => {
    const li = el("li", { id: `src-${k + 1}`, className: "source", tabIndex: -1 },
      el("strong", { textContent: s.title || s.id }), el("span", { className: "muted", textContent: ` (${s.id}, ${fmt(s.score)})` }));
    li.dataset.id = s.id;
    if (s.sentences && s.sentences.length) {
      li.append(el("blockquote", { textContent: s.sentences.join(" ") }));
    }
    return li;
  }));
}

function renderAnswer(answer, citations, sources) {
  const index = new Map(sources.map((s, k) => [s.id, k + 1]));
  const box = $("answer");
  box.replaceChildren();
  appendMarked(box, answer, citations, (text, c) => {
    const span = el("span", { className: "cited", textContent: text });
    const refs = el("sup", { className: "refs" });
    for (const s of c.sources || []) {
      const k = index.get(s.id);
      if (!k) continue;
      const a = el("a", { href: `#src-${k}`, className: "citation", textContent: `[${k}]` });
      a.title = s.sentence;
      a.dataset.source = s.id;
      refs.append(a);
    }
    const frag = document.createDocumentFragment();
    frag.append(span, refs);
    return frag;
  });
}

async function runAsk() {
  clearMessage();
  const s = formState();
  if (!s.collection || !s.q.trim()) { $("query").focus(); return; }
  pushState("search");
  const panel = $("answer-panel");
  const box = $("answer");
  panel.hidden = false;
  box.replaceChildren();
  box.dataset.state = "waiting";
  box.dataset.deltas = "0";
  $("sources").replaceChildren();
  $("answer-status").textContent = "Retrieving and asking the model…";
  const body = { ...searchBody(), limit: Math.min(Number(s.limit) || 5, 5), stream: true };
  delete body.explain;
  delete body.highlight;
  let sources = [];
  try {
    const resp = await request("POST", "/rag", body);
    let streamed = "";
    for await (const [name, data] of sseEvents(resp)) {
      if (name === "sources") {
        sources = data.sources || [];
        renderSources(sources);
        $("answer-status").textContent = "Answering…";
        box.dataset.state = "streaming";
      } else if (name === "done") {
        renderAnswer(data.answer, data.citations || [], sources);
        box.dataset.state = "done";
        const parts = [data.grounded ? "Grounded in the sources." : "Not grounded in the sources."];
        if (data.answer_type === "extractive") {
          parts.push(`The model's answer was replaced (${data.replaced_because}) by the source sentences closest to the question.`);
          if (data.generated_answer) box.append(el("details", {}, el("summary", { textContent: "The model's answer" }),
            el("p", { textContent: data.generated_answer })));
        }
        if (data.usage) parts.push(`${data.usage.completion_tokens} tokens.`);
        $("answer-status").textContent = parts.join(" ");
      } else if (name === "error") {
        box.dataset.state = "error";
        throw new ApiError(503, data.error?.message || "the answer stream failed");
      } else if (data && typeof data.delta === "string") {
        streamed += data.delta;
        box.textContent = streamed;
        box.dataset.deltas = String(Number(box.dataset.deltas) + 1);
      }
    }
    if (box.dataset.state !== "done") throw new Error("the answer stream ended early");
  } catch (err) {
    box.dataset.state = "error";
    const details = err.details || {};
    if (details.sources) { sources = details.sources; renderSources(sources); }
    if (details.extractive) {
      renderAnswer(details.extractive.answer, details.extractive.citations || [], sources);
      $("answer-status").textContent = "The model is unavailable: the source sentences closest to the question.";
    } else {
      $("answer-status").textContent = "";
    }
    showError(err);
  }
}

// ---- start ------------------------------------------------------------------------------------------------
function init() {
  $("fusion").replaceChildren(...CONFIG.fusions.map((f) => el("option", { value: f, textContent: f })));
  $("fusion").value = CONFIG.default_fusion;
  $("alpha").value = defaultAlpha();
  $("limit").max = CONFIG.max_limit;
  syncControls();

  $("mode").addEventListener("change", syncControls);
  $("alpha").addEventListener("input", () => { alphaChosen = true; syncControls(); });
  $("collection").addEventListener("change", () => {
    if (!alphaChosen) $("alpha").value = defaultAlpha();
    syncControls();
  });
  $("search-form").addEventListener("submit", (ev) => { ev.preventDefault(); pushState("search"); runSearch(); });
  $("ask-button").addEventListener("click", runAsk);
  $("create-form").addEventListener("submit", createCollection);
  $("upload-form").addEventListener("submit", uploadFile);
  $("tab-search").addEventListener("click", () => { showView("search"); pushState("search"); });
  $("tab-collections").addEventListener("click", () => { showView("collections"); pushState("collections"); });
  $("key-button").addEventListener("click", () => askKey("api", "Replace the key this page uses."));
  // back/forward between searches; a citation link only changes the #fragment: nothing to redo
  window.addEventListener("popstate", () => {
    if (location.search !== shownSearch) { shownSearch = location.search; start(false); }
  });
  start(true);
}

async function start(first) {
  const params = new URLSearchParams(location.search);
  try {
    if (first) await loadCollectionNames();
  } catch (err) { showError(err); }
  applyParams(params);
  const view = params.get("view") === "collections" ? "collections" : "search";
  showView(view);
  if (view === "search" && $("collection").value && $("query").value.trim()) await runSearch();
  document.body.dataset.ready = "true";
}

init();
