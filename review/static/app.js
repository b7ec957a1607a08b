// malmoi review: the page over a build's slices. Plain JavaScript, no build step, nothing
// fetched from anywhere but this server (the token, when there is one, goes on every request).
"use strict";

const TOKEN = new URLSearchParams(location.search).get("token");
const PAGE = 100;
const $ = (id) => document.getElementById(id);

const state = {
  offset: 0,
  total: 0,
  items: [],
  index: -1,
  editing: false,
  summary: null,
  loading: null,
  turning: null,
};

function withToken(url) {
  if (!TOKEN) return url;
  return url + (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(TOKEN);
}

async function api(path, options = {}) {
  const response = await fetch(withToken(path), {
    ...options,
    headers: { "Content-Type": "application/json", ...(options.headers || {}) },
  });
  if (!response.ok) {
    let detail = response.statusText;
    try {
      detail = (await response.json()).detail || detail;
    } catch (e) {
      /* not JSON */
    }
    throw new Error(`${response.status}: ${detail}`);
  }
  return response.json();
}

function sliceUrl(id, what) {
  return withToken(`api/slices/${encodeURIComponent(id)}/${what}`);
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}

function fmt(value, digits = 3) {
  if (value === null || value === undefined || value === "") return "";
  if (typeof value === "number") {
    return Number.isInteger(value) ? String(value) : value.toFixed(digits).replace(/0+$/, "").replace(/\.$/, "");
  }
  return String(value);
}

function seconds(value) {
  return value === null || value === undefined ? "" : value.toFixed(2) + " s";
}

function showError(error) {
  const box = $("counts");
  box.textContent = String(error.message || error);
  box.classList.add("error");
}

// --- the summary and the filters ----------------------------------------------------------

function fillSelect(select, options) {
  const keep = select.value;
  const first = select.options[0];
  select.replaceChildren(first);
  for (const o of options) select.append(el("option", { value: o.value, text: o.label }));
  select.value = [...select.options].some((o) => o.value === keep) ? keep : "";
}

function renderCounts(s) {
  const r = s.reviewed;
  $("counts").classList.remove("error");
  $("counts").replaceChildren(
    el("span", { text: `${s.total} slices` }),
    el("span", { class: "kept", text: `${s.kept} kept` }),
    el("span", { class: "rejected", text: `${s.rejected} rejected` }),
    el("span", { id: "reviewed", text: `reviewed ${r.reviewed} of ${s.total}` }),
    el("span", { class: "keep", text: `${r.keep} keep` }),
    el("span", { class: "reject", text: `${r.reject} reject` }),
    el("span", { class: "edited", text: `${r.edited} edited` }),
  );
}

async function loadSummary() {
  const s = await api("api/summary");
  state.summary = s;
  renderCounts(s);
  fillSelect($("stage"), s.stages.map((x) => ({ value: x.name, label: `${x.name} (${x.count})` })));
  fillSelect($("reason"), s.reasons.map((x) => ({ value: x.name, label: `${x.name} (${x.count})` })));
  fillSelect(
    $("source"),
    s.sources.map((x) => ({ value: x.id, label: `${x.title || x.id} (${x.count})` })),
  );
}

function query() {
  const p = new URLSearchParams({ offset: state.offset, limit: PAGE });
  for (const id of ["stage", "status", "reason", "source", "review", "sort"]) {
    if ($(id).value) p.set(id, $(id).value);
  }
  const q = $("q").value.trim();
  if (q) p.set("q", q);
  return p.toString();
}

// --- the list ------------------------------------------------------------------------------

function reviewBadge(item) {
  const r = item.review;
  if (!r) return el("span", { class: "badge none", text: "" });
  const parts = [];
  if (r.decision === "keep") parts.push("✓ keep");
  if (r.decision === "reject") parts.push("✗ reject");
  if (r.text !== null && r.text !== undefined) parts.push("✎");
  return el("span", { class: `badge review ${r.decision || "edited"}`, text: parts.join(" ") });
}

function rowFor(item, i) {
  const what = item.text || item.reason || item.id;
  return el(
    "div",
    {
      class: `row ${item.status}` + (i === state.index ? " selected" : ""),
      role: "option",
      "data-id": item.id,
      "data-index": i,
      "aria-selected": i === state.index ? "true" : "false",
    },
    el("span", { class: `badge ${item.status}`, text: item.status }),
    reviewBadge(item),
    el("span", { class: "stage", text: item.stage }),
    el("span", { class: "what", text: what, title: item.reason || item.id }),
    el("span", { class: "num", text: seconds(item.duration) }),
    el("span", { class: "num doubt", title: item.doubt_note, text: item.doubt === null ? "" : "±" + fmt(item.doubt, 3) }),
  );
}

function renderList() {
  const list = $("list");
  list.replaceChildren(...state.items.map(rowFor));
  if (!state.items.length) list.append(el("p", { class: "empty", text: "No slice matches." }));
  const a = state.total ? state.offset + 1 : 0;
  $("range").textContent = `${a}–${state.offset + state.items.length} of ${state.total}`;
  $("prev-page").disabled = state.offset === 0;
  $("next-page").disabled = state.offset + state.items.length >= state.total;
}

async function loadPage(select = 0) {
  const token = {};
  state.loading = token;
  document.body.dataset.busy = "1"; // until the page is shown (tests wait on it)
  try {
    const data = await api("api/slices?" + query());
    if (state.loading !== token) return; // a later request won
    state.total = data.total;
    state.items = data.items;
    state.index = -1;
    renderList();
    if (state.items.length) selectIndex(select < 0 ? state.items.length + select : select);
    else renderDetail(null);
  } finally {
    if (state.loading === token) delete document.body.dataset.busy;
  }
}

function selectIndex(i) {
  if (i < 0 || i >= state.items.length) return;
  cancelEdit();
  const list = $("list");
  const old = list.querySelector(".row.selected");
  if (old) {
    old.classList.remove("selected");
    old.setAttribute("aria-selected", "false");
  }
  state.index = i;
  const row = list.querySelector(`.row[data-index="${i}"]`);
  if (row) {
    row.classList.add("selected");
    row.setAttribute("aria-selected", "true");
    row.scrollIntoView({ block: "nearest" });
  }
  renderDetail(state.items[i]);
}

function pageTo(offset, select) {
  // one page change at a time: keys pressed while a page loads do not pile up
  if (state.turning) return state.turning;
  state.offset = offset;
  state.turning = loadPage(select).finally(() => {
    state.turning = null;
  });
  return state.turning;
}

async function move(step) {
  if (state.turning) return state.turning;
  const i = state.index + step;
  if (i >= 0 && i < state.items.length) return selectIndex(i);
  if (step > 0 && state.offset + state.items.length < state.total) {
    return pageTo(state.offset + PAGE, 0);
  }
  if (step < 0 && state.offset > 0) return pageTo(Math.max(0, state.offset - PAGE), -1);
}

async function turnPage(step) {
  const offset = state.offset + step * PAGE;
  if (offset < 0 || offset >= state.total) return;
  return pageTo(offset, 0);
}

// --- the slice -----------------------------------------------------------------------------

const SCORE_LABELS = {
  duration: "duration (s)",
  gender: "gender",
  similarity: "speaker similarity",
  score: "speaker score (AS-norm)",
  self_similarity: "self-similarity",
  threshold: "speaker threshold",
  snr_db_before: "SNR before (dB)",
  snr_db_after: "SNR after (dB)",
  snr_db: "SNR (dB)",
  dnsmos_ovrl_before: "DNSMOS OVRL before",
  dnsmos_ovrl_after: "DNSMOS OVRL after",
  dnsmos_ovrl: "DNSMOS OVRL",
  language: "language",
  language_prob: "language p",
  cer: "CER subtitles vs ASR",
  chars_per_second: "characters/s",
  speech_seconds: "speech (s)",
  avg_logprob: "ASR avg log-p",
  no_speech_prob: "ASR no-speech p",
  split: "split",
};

function current() {
  return state.index >= 0 ? state.items[state.index] : null;
}

function renderDetail(item) {
  const box = $("detail");
  if (!item) {
    box.removeAttribute("data-id");
    box.replaceChildren(el("p", { class: "empty", text: "No slice selected." }));
    return;
  }
  box.setAttribute("data-id", item.id);
  const player = el("audio", { id: "player", controls: true, preload: "auto", src: withToken(item.audio_url) });
  const spectro = el("div", { id: "spectro" },
    el("img", { id: "spectrogram", alt: "spectrogram", src: sliceUrl(item.id, "spectrogram.png") }),
    el("div", { id: "playhead" }),
  );
  spectro.addEventListener("click", (ev) => {
    const rect = spectro.getBoundingClientRect();
    if (player.duration) player.currentTime = ((ev.clientX - rect.left) / rect.width) * player.duration;
  });
  const tick = () => {
    const head = $("playhead");
    if (!head || !player.duration) return;
    head.style.left = `${(100 * player.currentTime) / player.duration}%`;
    if (!player.paused) requestAnimationFrame(tick);
  };
  player.addEventListener("play", () => requestAnimationFrame(tick));
  player.addEventListener("seeked", tick);

  const verdict = el("p", { class: "verdict" },
    el("span", { class: `badge ${item.status}`, text: item.status }),
    ` at ${item.stage}`,
    item.reason ? el("span", { class: "reason", text: ` — ${item.reason}` }) : null,
  );
  const r = item.review;
  const reviewLine = el("p", { id: "review-state", class: "review-state" },
    "review: ",
    el("b", { text: r && r.decision ? r.decision : "not decided" }),
    r && r.text !== null && r.text !== undefined ? " · text edited" : "",
    r && r.time ? el("small", { text: ` (${r.time.replace("T", " ").slice(0, 19)})` }) : "",
  );
  const edited = r && r.text !== null && r.text !== undefined;
  const textBox = el("div", { id: "text-box" },
    el("p", { id: "text", class: item.text ? "" : "none", text: item.text || "(no text)" }),
    el("p", { id: "text-source", class: "muted", text: edited
      ? `edited · was: ${item.original_text || "(none)"}${item.text_source ? ` (${item.text_source})` : ""}`
      : item.text_source ? `from ${item.text_source}` : "" }),
    el("textarea", { id: "editor", rows: 3, hidden: true, "aria-label": "Text" }),
  );
  if (item.asr_text && item.asr_text !== item.text) {
    textBox.append(el("p", { class: "muted alt" }, "ASR: ", el("span", { text: item.asr_text })));
  }
  if (item.subtitle_text && item.subtitle_text !== item.text) {
    textBox.append(el("p", { class: "muted alt" }, "subtitles: ", el("span", { text: item.subtitle_text })));
  }
  const actions = el("div", { class: "actions" },
    el("button", { type: "button", id: "do-keep", class: "keep", text: "Keep (a)" }),
    el("button", { type: "button", id: "do-reject", class: "reject", text: "Reject (r)" }),
    el("button", { type: "button", id: "do-edit", text: "Edit text (e)" }),
    el("button", { type: "button", id: "do-clear", text: "Clear verdict (u)" }),
  );
  actions.querySelector("#do-keep").addEventListener("click", () => decide({ decision: "keep" }));
  actions.querySelector("#do-reject").addEventListener("click", () => decide({ decision: "reject" }));
  actions.querySelector("#do-edit").addEventListener("click", () => startEdit());
  actions.querySelector("#do-clear").addEventListener("click", () => decide({ decision: "" }));

  const context = el("div", { class: "context" },
    el("button", { type: "button", id: "ctx-button", text: "Source around it (c)" }),
    el("audio", { id: "context", controls: true, preload: "none", hidden: true }),
    el("span", { id: "ctx-note", class: "muted" }),
  );
  context.querySelector("#ctx-button").addEventListener("click", () => playContext());

  const scores = el("div", { id: "scores" });
  for (const [k, v] of Object.entries(item.scores)) {
    scores.append(el("div", { class: "score", "data-key": k },
      el("span", { text: SCORE_LABELS[k] || k }), el("b", { text: fmt(v, 4) })));
  }
  if (item.doubt !== null) {
    scores.append(el("div", { class: "score doubt", title: item.doubt_note },
      el("span", { text: "doubt" }), el("b", { text: fmt(item.doubt, 4) }),
      el("small", { class: "muted", text: ` ${item.doubt_note}` })));
  }
  const history = el("ol", { id: "history" });
  for (const h of item.history) {
    history.append(el("li", { class: h.status },
      el("b", { text: h.stage }), ` ${h.status}`,
      h.reason ? el("span", { text: ` — ${h.reason}` }) : "",
      el("small", { class: "muted", text: ` ${h.id}` })));
  }
  const where = el("p", { class: "muted origin" },
    "source: ", el("span", { text: item.origin.title || item.source_id }),
    item.start !== null ? ` · ${seconds(item.start)} – ${seconds(item.stop)}` : "",
    item.origin.url ? el("small", { text: ` · ${item.origin.url}` }) : "");

  box.replaceChildren(
    el("h2", { id: "slice-id", text: item.id }),
    verdict,
    reviewLine,
    player,
    spectro,
    context,
    textBox,
    actions,
    el("h3", { text: "Scores" }),
    scores,
    el("h3", { text: "Stages" }),
    history,
    where,
  );
}

function playContext() {
  const item = current();
  const audio = $("context");
  if (!item || !audio) return;
  const player = $("player");
  if (player) player.pause();
  if (!audio.getAttribute("src")) {
    audio.src = sliceUrl(item.id, "context.wav") + (TOKEN ? "&" : "?") + "pad=3";
    audio.hidden = false;
    $("ctx-note").textContent = ` ±3 s of the source; the slice starts ${Math.min(3, item.start || 0).toFixed(1)} s in`;
    audio.addEventListener("error", () => { $("ctx-note").textContent = " no source track to play"; });
  }
  if (audio.paused) audio.play().catch(() => {});
  else audio.pause();
}

function togglePlay() {
  const ctx = $("context");
  if (ctx && !ctx.paused) return ctx.pause();
  const player = $("player");
  if (!player) return;
  if (player.paused) player.play().catch(() => {});
  else player.pause();
}

async function decide(body) {
  const item = current();
  if (!item) return;
  const index = state.index;
  try {
    const out = await api(`api/slices/${encodeURIComponent(item.id)}/decision`, {
      method: "POST",
      body: JSON.stringify(body),
    });
    state.items[index] = out.slice;
    const row = $("list").querySelector(`.row[data-index="${index}"]`);
    if (row) row.replaceWith(rowFor(out.slice, index));
    renderCounts(out.summary);
    if (state.index === index) renderDetail(out.slice);
    return out.slice;
  } catch (error) {
    showError(error);
  }
}

function startEdit() {
  const item = current();
  const editor = $("editor");
  if (!item || !editor) return;
  state.editing = true;
  editor.value = item.text;
  editor.hidden = false;
  $("text").hidden = true;
  editor.focus();
  editor.setSelectionRange(editor.value.length, editor.value.length);
}

function cancelEdit() {
  if (!state.editing) return;
  state.editing = false;
  const editor = $("editor");
  if (editor) {
    editor.hidden = true;
    editor.blur();
  }
  if ($("text")) $("text").hidden = false;
}

async function saveEdit() {
  const editor = $("editor");
  const text = editor.value.replace(/\s*\n\s*/g, " ").trim();
  state.editing = false;
  await decide({ text });
}

// --- keys ----------------------------------------------------------------------------------

function onKey(ev) {
  const target = ev.target;
  if (target && target.id === "editor") {
    if (ev.key === "Enter" && !ev.shiftKey) {
      ev.preventDefault();
      saveEdit();
    } else if (ev.key === "Escape") {
      ev.preventDefault();
      cancelEdit();
    }
    return;
  }
  if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
  const typing = target && (target.tagName === "INPUT" || target.tagName === "SELECT" || target.tagName === "TEXTAREA");
  if (typing) {
    if (ev.key === "Escape" || (ev.key === "Enter" && target.tagName === "INPUT")) {
      ev.preventDefault();
      target.blur();
    }
    return;
  }
  const actions = {
    j: () => move(1),
    ArrowDown: () => move(1),
    k: () => move(-1),
    ArrowUp: () => move(-1),
    " ": () => togglePlay(),
    a: () => decide({ decision: "keep" }),
    r: () => decide({ decision: "reject" }),
    u: () => decide({ decision: "" }),
    e: () => startEdit(),
    c: () => playContext(),
    n: () => turnPage(1),
    p: () => turnPage(-1),
    "/": () => $("q").focus(),
  };
  const act = actions[ev.key];
  if (!act) return;
  ev.preventDefault();
  if (target && target.tagName === "BUTTON") target.blur();
  Promise.resolve(act()).catch(showError);
}

// --- start ---------------------------------------------------------------------------------

function refilter() {
  state.offset = 0;
  loadPage(0).catch(showError);
}

function start() {
  document.addEventListener("keydown", onKey);
  $("filters").addEventListener("submit", (ev) => ev.preventDefault());
  for (const id of ["stage", "status", "reason", "source", "review", "sort"]) {
    $(id).addEventListener("change", () => {
      $(id).blur();
      refilter();
    });
  }
  let timer = null;
  $("q").addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(refilter, 250);
  });
  $("prev-page").addEventListener("click", () => turnPage(-1).catch(showError));
  $("next-page").addEventListener("click", () => turnPage(1).catch(showError));
  $("list").addEventListener("click", (ev) => {
    const row = ev.target.closest(".row");
    if (row) selectIndex(Number(row.dataset.index));
  });
  Promise.all([loadSummary(), loadPage(0)]).catch(showError);
}

start();
