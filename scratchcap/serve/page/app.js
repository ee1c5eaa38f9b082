// scratchcap's page: upload (pick or drop) -> POST /api/caption -> the caption, its hypotheses and, per word,
// where it looked. Everything the server sends is inserted as text (textContent), never as HTML; the photo is
// drawn from the file itself, so nothing leaves the browser but the upload.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { bitmap: null, result: null, word: -1 };

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

function setStatus(message) {
  $("status").textContent = message;
}

// The photo, then for word k its attention: the photo dimmed, and undimmed where the (smoothly upscaled) map is high.
function draw() {
  const canvas = $("photo");
  const ctx = canvas.getContext("2d");
  const bm = state.bitmap;
  if (!bm) return;
  const side = 448;
  const scale = side / Math.max(bm.width, bm.height);
  canvas.width = Math.round(bm.width * scale);
  canvas.height = Math.round(bm.height * scale);
  ctx.drawImage(bm, 0, 0, canvas.width, canvas.height);
  const res = state.result;
  canvas.dataset.word = String(state.word);
  if (!res || !res.attention || state.word < 0) {
    $("peak").textContent = res && !res.attention ? "This model has no attention to show." : "";
    return;
  }
  const alpha = res.attention[state.word];
  const [rows, cols] = res.grid;
  let peak = 0;
  for (const a of alpha) peak = Math.max(peak, a);
  const mask = document.createElement("canvas");
  mask.width = cols;
  mask.height = rows;
  const img = mask.getContext("2d").createImageData(cols, rows);
  for (let i = 0; i < rows * cols; i++) {
    img.data[4 * i + 3] = Math.round(255 * Math.pow(alpha[i] / (peak || 1), 1.5));
  }
  mask.getContext("2d").putImageData(img, 0, 0);
  const lit = document.createElement("canvas");
  lit.width = canvas.width;
  lit.height = canvas.height;
  const lctx = lit.getContext("2d");
  lctx.drawImage(bm, 0, 0, lit.width, lit.height);
  lctx.globalCompositeOperation = "destination-in";
  lctx.imageSmoothingEnabled = true;
  lctx.imageSmoothingQuality = "high";
  lctx.drawImage(mask, 0, 0, lit.width, lit.height);
  ctx.fillStyle = "rgba(0, 0, 0, 0.7)";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  ctx.drawImage(lit, 0, 0);
  const words = res.words.concat(["<end>"]);
  $("peak").textContent = `"${words[state.word]}": peak attention ${peak.toFixed(3)}, ` +
    `${(peak * rows * cols).toFixed(1)}x a uniform map` +
    (res.sentinel ? `; from the language model (sentinel) ${res.sentinel[state.word].toFixed(2)}` : "");
}

function chooseWord(k) {
  state.word = k;
  document.querySelectorAll("#caption .word").forEach((el) => el.classList.toggle("on", Number(el.dataset.k) === k));
  draw();
}

function showResult(res) {
  state.result = res;
  state.word = -1;
  const caption = $("caption");
  caption.replaceChildren();
  res.words.forEach((w, k) => {
    const span = document.createElement("span");
    span.className = "word";
    span.dataset.k = String(k);
    span.tabIndex = 0;
    span.textContent = w;
    span.addEventListener("mouseenter", () => chooseWord(k));
    span.addEventListener("focus", () => chooseWord(k));
    span.addEventListener("click", () => chooseWord(state.word === k ? -1 : k));
    caption.append(span, document.createTextNode(" "));
  });
  const list = $("hypotheses");
  list.replaceChildren();
  for (const h of res.hypotheses) {
    const li = document.createElement("li");
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = ` (log-probability ${h.logprob.toFixed(2)})`;
    li.append(document.createTextNode(h.caption), score);
    list.append(li);
  }
  const t = res.timing_ms;
  $("timing").textContent = `${res.model}, beam ${res.beam}: queue ${t.queue} ms, VGG-16 ${t.vgg16} ms, ` +
    `decoding ${t.decode} ms (batch of ${res.batch})`;
  $("result").hidden = false;
  draw();
}

async function caption(blob) {
  showError("");
  if (!blob || !blob.size) {
    showError("That file is empty.");
    return;
  }
  try {
    state.bitmap = await createImageBitmap(blob);
  } catch (e) {
    state.bitmap = null;  // the server says why (its message is the one to show)
  }
  setStatus("Captioning...");
  const beam = $("beam").value;
  let res, body;
  try {
    res = await fetch(`/api/caption?beam=${beam}&n=${beam}&attention=1`, {
      method: "POST", body: blob, headers: { "Content-Type": blob.type || "application/octet-stream" },
    });
    body = await res.json();
  } catch (e) {
    setStatus("");
    showError(`The server could not be reached (${e.message}).`);
    return;
  }
  setStatus("");
  if (!res.ok) {
    showError(`${body.error || "The server refused the image."} (HTTP ${res.status})`);
    $("result").hidden = true;
    return;
  }
  showResult(body);
}

function setUp() {
  const drop = $("drop");
  $("caption").addEventListener("mouseleave", () => chooseWord(-1));
  $("file").addEventListener("change", (e) => { if (e.target.files[0]) caption(e.target.files[0]); });
  ["dragenter", "dragover"].forEach((t) => drop.addEventListener(t, (e) => { e.preventDefault(); drop.classList.add("over"); }));
  ["dragleave", "drop"].forEach((t) => drop.addEventListener(t, () => drop.classList.remove("over")));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    const file = e.dataTransfer && e.dataTransfer.files[0];
    if (file) caption(file);
  });
  fetch("/api/model").then((r) => r.json()).then((m) => {
    const scores = Object.entries(m.dev_scores || {}).filter(([, v]) => typeof v === "number")
      .map(([k, v]) => `${k} ${v.toFixed(3)}`).join(", ");
    $("model").textContent = `Model: ${m.model} (${m.checkpoint}), trained on ${m.training_data}, ` +
      `vocabulary ${m.vocabulary} words, ${m.grid[0]}x${m.grid[1]} regions` + (scores ? `; dev ${scores}` : "");
  }).catch(() => {});
  fetch("/api/examples").then((r) => r.json()).then((list) => {
    for (const name of list.examples) {
      const button = document.createElement("button");
      button.type = "button";
      button.title = `caption ${name}`;
      const img = document.createElement("img");
      img.src = `/examples/${encodeURIComponent(name)}`;
      img.alt = name;
      button.append(img);
      button.addEventListener("click", async () => caption(await (await fetch(img.src)).blob()));
      $("examples").append(button);
    }
  }).catch(() => {});
}

document.addEventListener("DOMContentLoaded", setUp);
