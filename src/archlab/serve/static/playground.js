// archlab playground: plain JavaScript over the server's API (GET /v1/runs, POST /v1/runs/NAME/VERB).
"use strict";

const $ = (root, sel) => root.querySelector(sel);
const tokenBox = document.getElementById("token");
tokenBox.value = sessionStorage.getItem("archlab-token") || "";
tokenBox.addEventListener("change", () => { sessionStorage.setItem("archlab-token", tokenBox.value); start(); });

function headers(json = true) {
  const h = json ? { "Content-Type": "application/json" } : {};
  if (tokenBox.value) h.Authorization = "Bearer " + tokenBox.value;
  return h;
}

async function refusal(response) {
  try { return (await response.json()).error || response.statusText; } catch (e) { return response.statusText; }
}

async function call(run, verb, body, signal) {
  const response = await fetch(`/v1/runs/${encodeURIComponent(run)}/${verb}`, {
    method: "POST", headers: headers(), body: JSON.stringify(body), signal,
  });
  if (!response.ok) throw new Error(await refusal(response));
  return response;
}

function panel(template, run, title) {
  const node = document.getElementById(template).content.firstElementChild.cloneNode(true);
  const h2 = $(node, "h2");
  if (h2 && run) h2.textContent = title || run.name;
  const meta = $(node, ".meta");
  if (meta && run) meta.textContent = describe(run);
  node.dataset.run = run ? run.name : "";
  document.getElementById("panels").appendChild(node);
  return node;
}

function describe(run) {
  const figures = [];
  for (const split of ["test", "val"]) {
    const metrics = run.results[split] || {};
    for (const [k, v] of Object.entries(metrics)) {
      if (k.endsWith("_std") || k.includes("_")) continue;
      figures.push(`${split} ${k} ${k === "accuracy" ? (100 * v).toFixed(2) + " %" : Number(v).toPrecision(4)}`);
      if (figures.length >= 2) break;
    }
    if (figures.length) break;
  }
  const members = run.members ? `, ${run.members} members` : "";
  return `${run.task} · ${run.model}${members}${figures.length ? " · " + figures.join(", ") : ""}`;
}

function showError(node, error) {
  $(node, ".error").textContent = error ? String(error.message || error) : "";
}

function bars(container, labels, probabilities, title) {
  container.innerHTML = "";
  if (title) { const h = document.createElement("h3"); h.textContent = title; container.appendChild(h); }
  const best = probabilities.indexOf(Math.max(...probabilities));
  labels.forEach((label, i) => {
    const row = document.createElement("div");
    row.className = "bar" + (i === best ? " best" : "");
    row.dataset.label = label;
    row.innerHTML = `<span></span><div class="track"><div class="fill"></div></div><span class="p"></span>`;
    row.children[0].textContent = label;
    row.querySelector(".fill").style.width = `${(100 * probabilities[i]).toFixed(1)}%`;
    row.querySelector(".p").textContent = `${(100 * probabilities[i]).toFixed(1)}%`;
    container.appendChild(row);
  });
}

// ----- text generation: server-sent events read from a fetch stream -----

function generatePanel(run) {
  const node = panel("t-generate", run);
  const out = $(node, ".output"), go = $(node, ".go"), stop = $(node, ".stop");
  const temp = $(node, ".temperature");
  temp.addEventListener("input", () => { $(node, ".temperature-value").textContent = temp.value; });
  let controller = null;
  stop.addEventListener("click", () => controller && controller.abort());
  go.addEventListener("click", async () => {
    showError(node, null);
    const prompt = $(node, ".prompt").value;
    out.textContent = prompt;
    controller = new AbortController();
    go.disabled = true; stop.disabled = false;
    try {
      const response = await call(run.name, "generate", {
        prompt, temperature: Number(temp.value), top_k: Number($(node, ".top-k").value) || null,
        max_new_tokens: Number($(node, ".max-new-tokens").value),
      }, controller.signal);
      await readEvents(response, (event, data) => {
        if (event === "error") showError(node, data.error);
        else if (data.text !== undefined) { out.textContent += data.text; out.scrollTop = out.scrollHeight; }
      });
      node.dataset.done = "1";
    } catch (e) {
      if (e.name !== "AbortError") showError(node, e);
    } finally { go.disabled = false; stop.disabled = true; }
  });
}

async function readEvents(response, onEvent) {
  const reader = response.body.getReader(), decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut); buffer = buffer.slice(cut + 2);
      let event = "message", data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event: ")) event = line.slice(7);
        else if (line.startsWith("data: ")) data += line.slice(6);
      }
      if (data) onEvent(event, JSON.parse(data));
    }
  }
}

// ----- translation with the cross-attention heatmap -----

function translatePanel(run) {
  const node = panel("t-translate", run, `${run.name}: German → English`);
  $(node, ".go").addEventListener("click", async () => {
    showError(node, null);
    $(node, ".heatmap").innerHTML = "";
    try {
      const response = await call(run.name, "translate", {
        text: $(node, ".text").value, beam: Number($(node, ".beam").value) || null, attention: true,
      });
      const result = await response.json();
      $(node, ".translation").textContent = result.translation;
      if (result.attention) heatmap($(node, ".heatmap"), result.source, result.target, result.attention);
    } catch (e) { showError(node, e); }
  });
}

function heatmap(container, source, target, weights) {
  const table = document.createElement("table");
  const head = table.createTHead().insertRow();
  head.appendChild(document.createElement("th"));
  for (const s of source) { const th = document.createElement("th"); th.textContent = s; head.appendChild(th); }
  const body = table.createTBody();
  target.forEach((t, i) => {
    const row = body.insertRow();
    const th = document.createElement("th"); th.textContent = t; row.appendChild(th);
    weights[i].forEach((w) => {
      const td = row.insertCell();
      td.style.background = `rgba(31, 78, 140, ${w.toFixed(3)})`;
      td.title = w.toFixed(3);
    });
  });
  const caption = table.createCaption();
  caption.textContent = "last decoder layer's cross-attention, mean over heads (rows: output tokens)";
  container.appendChild(table);
}

// ----- digits: a canvas for every image run, and a sound for fusion runs -----

function digitsPanel(runs) {
  const node = panel("t-digits", null);
  const canvas = $(node, ".pad"), ctx = canvas.getContext("2d");
  const columns = $(node, ".bars-columns");
  const fusion = runs.some((r) => r.inputs.some((i) => i.kind === "audio"));
  if (fusion) node.classList.add("fusion");
  const clear = () => { ctx.fillStyle = "#000"; ctx.fillRect(0, 0, canvas.width, canvas.height); };
  clear();
  let drawing = false, inked = false, wav = null;
  const at = (e) => {
    const r = canvas.getBoundingClientRect();
    return [(e.clientX - r.left) * canvas.width / r.width, (e.clientY - r.top) * canvas.height / r.height];
  };
  canvas.addEventListener("pointerdown", (e) => {
    drawing = true; inked = true; canvas.setPointerCapture(e.pointerId);
    ctx.strokeStyle = "#fff"; ctx.lineWidth = 22; ctx.lineCap = "round"; ctx.lineJoin = "round";
    ctx.beginPath(); ctx.moveTo(...at(e)); ctx.lineTo(...at(e)); ctx.stroke();
  });
  canvas.addEventListener("pointermove", (e) => { if (drawing) { ctx.lineTo(...at(e)); ctx.stroke(); } });
  const finish = () => { if (drawing) { drawing = false; classifyAll(); } };
  canvas.addEventListener("pointerup", finish);
  canvas.addEventListener("pointercancel", finish);
  $(node, ".clear").addEventListener("click", () => { clear(); inked = false; columns.innerHTML = ""; });
  $(node, ".wav").addEventListener("change", async (e) => {
    wav = e.target.files[0] ? await dataUrl(e.target.files[0]) : null; classifyAll();
  });
  $(node, ".record").addEventListener("click", async () => {
    try { wav = await record(1000); classifyAll(); } catch (e) { showError(node, e); }
  });

  async function classifyAll() {
    if (!inked) return;
    showError(node, null);
    const image = canvas.toDataURL("image/png");
    for (const run of runs) {
      let column = columns.querySelector(`[data-run="${CSS.escape(run.name)}"]`);
      if (!column) {
        column = document.createElement("div"); column.className = "bars-column";
        column.dataset.run = run.name; columns.appendChild(column);
      }
      const audio = run.inputs.some((i) => i.kind === "audio");
      if (audio && !wav) { column.textContent = `${run.name}: give a spoken digit too`; continue; }
      const inputs = audio ? { IMAGE: image, AUDIO: wav } : { IMAGE: image };
      try {
        const response = await call(run.name, "classify", { inputs });
        const result = await response.json();
        bars(column, result.labels, result.probabilities, `${run.name} (${run.model})`);
        if (audio) {
          const p = await (await call(run.name, "predict", { inputs })).json();
          if (p.gate_image !== undefined) {
            const g = document.createElement("p"); g.className = "gate";
            g.textContent = `GMU gate: image ${p.gate_image.toFixed(2)}, audio ${p.gate_audio.toFixed(2)}`;
            column.appendChild(g);
          }
        }
      } catch (e) { column.innerHTML = ""; showError(node, `${run.name}: ${e.message}`); }
    }
  }
}

function dataUrl(blob) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result); reader.onerror = reject;
    reader.readAsDataURL(blob);
  });
}

// Record from the microphone and encode 16-bit mono PCM WAV (the server resamples it).
async function record(ms) {
  const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  const chunks = [], recorder = new MediaRecorder(stream);
  recorder.ondataavailable = (e) => chunks.push(e.data);
  const stopped = new Promise((resolve) => { recorder.onstop = resolve; });
  recorder.start(); await new Promise((r) => setTimeout(r, ms)); recorder.stop(); await stopped;
  stream.getTracks().forEach((t) => t.stop());
  const context = new AudioContext();
  const audio = await context.decodeAudioData(await new Blob(chunks).arrayBuffer());
  const samples = audio.getChannelData(0), rate = audio.sampleRate;
  const buffer = new ArrayBuffer(44 + 2 * samples.length), v = new DataView(buffer);
  const text = (o, s) => [...s].forEach((c, i) => v.setUint8(o + i, c.charCodeAt(0)));
  text(0, "RIFF"); v.setUint32(4, 36 + 2 * samples.length, true); text(8, "WAVEfmt ");
  v.setUint32(16, 16, true); v.setUint16(20, 1, true); v.setUint16(22, 1, true);
  v.setUint32(24, rate, true); v.setUint32(28, 2 * rate, true); v.setUint16(32, 2, true);
  v.setUint16(34, 16, true); text(36, "data"); v.setUint32(40, 2 * samples.length, true);
  samples.forEach((s, i) => v.setInt16(44 + 2 * i, Math.max(-1, Math.min(1, s)) * 32767, true));
  return dataUrl(new Blob([buffer], { type: "audio/wav" }));
}

function audioPanel(run) {
  const node = panel("t-audio", run, `${run.name}: spoken digit`);
  const classify = async (wav) => {
    showError(node, null);
    try {
      const result = await (await call(run.name, "classify", { inputs: { AUDIO: wav } })).json();
      bars($(node, ".bars"), result.labels, result.probabilities);
    } catch (e) { showError(node, e); }
  };
  $(node, ".wav").addEventListener("change", async (e) => e.target.files[0] && classify(await dataUrl(e.target.files[0])));
  $(node, ".record").addEventListener("click", async () => {
    try { classify(await record(1000)); } catch (e) { showError(node, e); }
  });
}

// ----- molecules: the prediction and RDKit's drawing -----

function moleculePanel(run) {
  const node = panel("t-molecule", run, `${run.name}: molecule`);
  $(node, ".go").addEventListener("click", async () => {
    showError(node, null);
    $(node, ".value").textContent = ""; $(node, ".drawing").innerHTML = "";
    try {
      const response = await call(run.name, "predict", { inputs: { SMILES: $(node, ".smiles").value }, draw: true });
      const result = await response.json();
      $(node, ".value").textContent = result.value !== undefined
        ? `predicted: ${result.value.toFixed(3)}` + (result.value_std !== undefined ? ` ± ${result.value_std.toFixed(3)}` : "")
        : `${result.label} (${(100 * result.probability).toFixed(1)} %)`;
      if (result.svg) $(node, ".drawing").innerHTML = result.svg;
    } catch (e) { showError(node, e); }
  });
}

// ----- knowledge graphs: the top tails of a head and a relation (or heads of a tail) -----

function kgPanel(run) {
  const node = panel("t-kg", run, `${run.name}: link prediction`);
  if (!run.options.includes("side")) $(node, ".side").hidden = true;
  $(node, ".go").addEventListener("click", async () => {
    showError(node, null);
    const table = $(node, ".ranking"); table.innerHTML = "";
    const [first, second] = run.inputs.map((i) => i.name);
    const inputs = { [first]: $(node, ".head").value, [second]: $(node, ".relation").value };
    const options = run.options.includes("top_k") ? { top_k: Number($(node, ".top-k").value) || 10 } : {};
    if (run.options.includes("side")) options.side = $(node, ".side").value; // "head": rank the heads
    try {
      const result = await (await call(run.name, "predict", { inputs, options })).json();
      $(node, ".query").textContent = result.query || "";
      for (const r of result.ranking || []) {
        const row = table.insertRow();
        [r.rank, r.entity, r.score.toFixed(3), r.known].forEach((x) => { row.insertCell().textContent = x; });
      }
    } catch (e) { showError(node, e); }
  });
}

// ----- any other prediction from text inputs (sentences, dates) -----

function textPanel(run) {
  const node = panel("t-text", run);
  const fields = $(node, ".fields");
  for (const input of run.inputs) {
    const box = document.createElement("input");
    box.type = "text"; box.placeholder = input.name; box.dataset.name = input.name;
    fields.appendChild(box);
  }
  $(node, ".go").addEventListener("click", async () => {
    showError(node, null);
    $(node, ".value").textContent = ""; $(node, ".bars").innerHTML = "";
    const inputs = {};
    fields.querySelectorAll("input").forEach((b) => { inputs[b.dataset.name] = b.value; });
    try {
      if (run.verbs.includes("classify")) {
        const result = await (await call(run.name, "classify", { inputs })).json();
        bars($(node, ".bars"), result.labels, result.probabilities);
      } else {
        const result = await (await call(run.name, "predict", { inputs })).json();
        $(node, ".value").textContent = result.value !== undefined ? result.value.toFixed(3) : JSON.stringify(result);
      }
    } catch (e) { showError(node, e); }
  });
}

// ----- GAN samples -----

function samplePanel(run) {
  const node = panel("t-sample", run, `${run.name}: samples`);
  $(node, ".go").addEventListener("click", async () => {
    showError(node, null);
    try {
      const seed = Math.floor(Math.random() * 1e9);
      const response = await call(run.name, "sample", { n: Number($(node, ".n").value) || 36, seed });
      const img = $(node, ".grid");
      if (img.src) URL.revokeObjectURL(img.src);
      img.src = URL.createObjectURL(await response.blob());
      img.alt = response.headers.get("X-Layout") || "samples";
    } catch (e) { showError(node, e); }
  });
}

// ----- sentence embeddings: cosine similarities -----

function embedPanel(run) {
  const node = panel("t-embed", run, `${run.name}: sentence embeddings`);
  $(node, ".go").addEventListener("click", async () => {
    showError(node, null);
    const texts = $(node, ".texts").value.split("\n").filter((t) => t.trim());
    try {
      const { embeddings } = await (await call(run.name, "embed", { texts })).json();
      const norm = (v) => Math.sqrt(v.reduce((a, x) => a + x * x, 0));
      const table = $(node, ".similarity"); table.innerHTML = "";
      texts.forEach((t, i) => {
        const row = table.insertRow(); row.insertCell().textContent = t.slice(0, 30);
        embeddings.forEach((e, j) => {
          const dot = embeddings[i].reduce((a, x, k) => a + x * e[k], 0);
          row.insertCell().textContent = (dot / norm(embeddings[i]) / norm(e)).toFixed(2);
        });
      });
    } catch (e) { showError(node, e); }
  });
}

// ----- the page -----

async function start() {
  const main = document.getElementById("panels");
  main.innerHTML = "";
  const response = await fetch("/v1/runs", { headers: headers(false) });
  if (!response.ok) {
    main.innerHTML = `<p class="error"></p>`;
    main.firstChild.textContent = await refusal(response);
    return;
  }
  const { runs } = await response.json();
  const has = (run, verb) => run.verbs.includes(verb);
  const kinds = (run) => run.inputs.map((i) => i.kind).join("+");
  const names = (run) => run.inputs.map((i) => i.name);
  runs.filter((r) => has(r, "generate")).forEach(generatePanel);
  runs.filter((r) => has(r, "translate")).forEach(translatePanel);
  const images = runs.filter((r) => has(r, "classify") && (kinds(r) === "image" || kinds(r) === "image+audio"));
  if (images.length) digitsPanel(images);
  runs.filter((r) => has(r, "classify") && kinds(r) === "audio").forEach(audioPanel);
  runs.filter((r) => has(r, "predict") && names(r).includes("SMILES")).forEach(moleculePanel);
  runs.filter((r) => has(r, "predict") && r.predicts === "query").forEach(kgPanel);
  runs.filter((r) => has(r, "predict") && r.predicts !== "query" && kinds(r).split("+").every((k) => k === "text")
    && !names(r).includes("SMILES")).forEach(textPanel);
  runs.filter((r) => has(r, "sample")).forEach(samplePanel);
  runs.filter((r) => has(r, "embed")).forEach(embedPanel);
  if (!main.children.length) main.innerHTML = "<p>None of these runs has a verb the playground shows.</p>";
}

start();
