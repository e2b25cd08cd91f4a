// vcam control page: every control is drawn from GET /api/state (polled, so two tabs stay in sync) and
// every change is a POST /api/state of just that setting, in the shape GET returns ({settings: {...}}); the
// server validates and the stream applies it between frames. No framework, no build step.
"use strict";

const $ = (id) => document.getElementById(id);
const POLL_MS = 1000;      // settings and status
const PREVIEW_MS = 250;    // a few frames per second: the preview must cost the stream little
let state = null;

function showMessage(text, ok = false) {
  const box = $("message");
  box.textContent = text;
  box.className = ok ? "message ok" : "message";
  box.hidden = !text;
}

async function post(changes) {
  const response = await fetch("/api/state", {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ settings: changes }),
  });
  const data = await response.json();
  if (!response.ok) { showMessage(data.error); return; }
  showMessage("");
  render(data);
}

// -- drawing the state -----------------------------------------------------------------------------
function setIfIdle(element, apply) {
  if (document.activeElement !== element || element.type === "checkbox") apply(element);
}

function renderSettings(s) {
  setIfIdle($("harmonize"), (e) => { e.checked = s.harmonize; });
  setIfIdle($("split"), (e) => { e.checked = s.split; });
  setIfIdle($("mask_smoothing"), (e) => { e.checked = s.mask_smoothing; });
  setIfIdle($("segmentation_model"), (e) => { e.value = String(s.segmentation_model); });
  for (const id of ["strength", "smoothing"]) {
    setIfIdle($(id), (e) => { e.value = s[id]; });
    document.querySelector(`output[for=${id}]`).textContent = Number(s[id]).toFixed(2);
  }
  const current = s.background[0];
  for (const b of document.querySelectorAll("#gallery button, .swatch")) {
    b.classList.toggle("selected", b.dataset.spec === current || `color:${b.dataset.color}` === current);
  }
  $("blur").classList.toggle("selected", current.startsWith("blur"));
  renderReference(s.reference);
}

function renderReference(reference) {
  const box = $("reference-box");
  const parts = reference ? reference.split(",").map(Number) : null;
  const fractions = parts && parts.length === 4 && reference.includes(".") && parts.every((v) => v <= 1);
  box.hidden = !fractions;
  $("reference-text").textContent = reference ? `reference: ${reference}` : "reference: the whole background";
  if (fractions) placeBox(box, parts[0], parts[1], parts[2], parts[3]);
}

function renderGallery(items) {
  const gallery = $("gallery");
  const key = JSON.stringify(items.map((i) => i.spec));
  if (gallery.dataset.key === key) return;
  gallery.dataset.key = key;
  gallery.replaceChildren(...items.map((item) => {
    const b = document.createElement("button");
    b.type = "button"; b.dataset.spec = item.spec; b.title = item.name; b.dataset.kind = item.kind;
    if (item.video) { b.textContent = `▶ ${item.name}`; } else {
      const img = document.createElement("img");
      img.src = `/thumb?spec=${encodeURIComponent(item.spec)}`; img.alt = item.name; img.loading = "lazy";
      b.append(img);
    }
    b.addEventListener("click", () => post({ background: [item.spec] }));
    return b;
  }));
}

function renderStatus(st) {
  const el = $("status");
  const parts = [];
  if (st.fps !== undefined) parts.push(`${st.fps} fps`);
  if (st.latency_p95_ms != null) parts.push(`latency p95 ${st.latency_p95_ms} ms`);
  const h = st.harmonizer;
  parts.push(h ? `harmonizer ${Number(h.refresh_hz).toFixed(1)} Hz (${h.backend}, ${h.mode})${h.failed ? " FAILED" : ""}` : "harmonizer off");
  if (st.cpu_percent != null) parts.push(`CPU ${st.cpu_percent} % of ${st.cpus} cores`);
  parts.push(`camera ${st.camera}`);
  el.textContent = parts.join(" · ");
  el.dataset.frames = st.frames ?? 0;
  el.classList.toggle("bad", st.camera !== "live" || Boolean(h && h.failed));
}

function render(data) {
  state = data;
  renderGallery(data.gallery);
  renderSettings(data.settings);
  renderStatus(data.status);
}

async function poll() {
  try {
    const response = await fetch("/api/state");
    render(await response.json());
  } catch (error) {
    $("status").textContent = "vcam is not running";
    $("status").classList.add("bad");
  }
  setTimeout(poll, POLL_MS);
}

// -- preview: one request at a time, a few per second, none while the tab is hidden ------------------
async function refreshPreview() {
  try {
    if (!document.hidden) {
      const response = await fetch(`/preview?t=${Date.now()}`);
      if (response.ok) {  // one request and one decode per frame (an <img> reload would fetch twice)
        const img = $("preview"), url = URL.createObjectURL(await response.blob());
        img.onload = () => { URL.revokeObjectURL(url); img.dataset.frames = Number(img.dataset.frames) + 1; };
        img.src = url;
      }
    }
  } catch (error) { /* vcam stopped: the status line says so */ }
  setTimeout(refreshPreview, PREVIEW_MS);
}

// -- reference region: drag on the preview -----------------------------------------------------------
function placeBox(box, x, y, w, h) {
  Object.assign(box.style, { left: `${x * 100}%`, top: `${y * 100}%`, width: `${w * 100}%`, height: `${h * 100}%` });
}

function fraction(event) {
  const r = $("preview").getBoundingClientRect();
  const clamp = (v) => Math.min(Math.max(v, 0), 1);
  return [clamp((event.clientX - r.left) / r.width), clamp((event.clientY - r.top) / r.height)];
}

function setUpDrag() {
  const view = $("view"), drag = $("drag-box");
  let start = null;
  const rect = (event) => {
    const [x1, y1] = fraction(event);
    const floor = (v) => Math.floor(v * 10000) / 10000;  // never past the frame's edge after rounding
    const x = floor(Math.min(start[0], x1)), y = floor(Math.min(start[1], y1));
    return [x, y, floor(Math.abs(x1 - start[0])), floor(Math.abs(y1 - start[1]))];
  };
  view.addEventListener("pointerdown", (event) => {
    start = fraction(event); view.setPointerCapture(event.pointerId); drag.hidden = false;
    placeBox(drag, start[0], start[1], 0, 0);
  });
  view.addEventListener("pointermove", (event) => { if (start) placeBox(drag, ...rect(event)); });
  view.addEventListener("pointerup", (event) => {
    if (!start) return;
    const [x, y, w, h] = rect(event);
    start = null; drag.hidden = true;
    if (w < 0.01 || h < 0.01) return;  // a click, not a drag
    post({ reference: [x, y, w, h].map((v) => v.toFixed(4)).join(",") });
  });
}

// -- controls ----------------------------------------------------------------------------------------
async function upload(file) {
  showMessage(`uploading ${file.name}…`, true);
  const response = await fetch(`/api/upload?name=${encodeURIComponent(file.name)}`, { method: "POST", body: file });
  const data = await response.json();
  $("upload").value = "";
  if (!response.ok) { showMessage(data.error); return; }
  renderGallery(data.gallery);
  await post({ background: [data.spec] });
}

function setUpControls() {
  for (const id of ["harmonize", "split", "mask_smoothing"]) {
    $(id).addEventListener("change", (e) => post({ [id]: e.target.checked }));
  }
  for (const id of ["strength", "smoothing"]) {
    $(id).addEventListener("change", (e) => post({ [id]: Number(e.target.value) }));
    $(id).addEventListener("input", (e) => {
      document.querySelector(`output[for=${id}]`).textContent = Number(e.target.value).toFixed(2);
    });
  }
  $("segmentation_model").addEventListener("change", (e) => post({ segmentation_model: Number(e.target.value) }));
  $("blur").addEventListener("click", () => post({ background: [`blur:${$("blur-strength").value}`] }));
  $("blur-strength").addEventListener("change", (e) => post({ background: [`blur:${e.target.value}`] }));
  for (const s of document.querySelectorAll(".swatch")) {
    s.addEventListener("click", () => post({ background: [`color:${s.dataset.color}`] }));
  }
  $("color").addEventListener("change", (e) => post({ background: [`color:${e.target.value}`] }));
  $("upload").addEventListener("change", (e) => { if (e.target.files.length) upload(e.target.files[0]); });
  $("reference-reset").addEventListener("click", () => post({ reference: null }));
}

setUpControls();
setUpDrag();
poll();
refreshPreview();
