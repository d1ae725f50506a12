// camscope explorer: plain JavaScript, no framework, no network access beyond this server.
"use strict";

const SLOW = new Set(["scorecam", "sscam", "iscam", "ablationcam", "finer-scorecam", "smoothgradcampp"]);
const state = {
  image: null, model: null, predictions: [], target: null, versus: [], job: null, timer: null,
  info: null, pollDelay: 250, dataClasses: [],
};
const $ = (id) => document.getElementById(id);

async function api(path, options = {}) {
  const response = await fetch(path, options);
  let body = null;
  try { body = await response.json(); } catch (error) { body = null; }
  if (!response.ok) {
    const message = body && body.error ? body.error : (body && body.detail ? JSON.stringify(body.detail) : response.statusText);
    throw new Error(message);
  }
  return body;
}

function show(element, text) {
  element.textContent = text || "";
  element.hidden = !text;
}

// A request failed or was cancelled: the maps on screen are of earlier settings. Mark them so (or clear an
// empty view), never leave them looking current.
function fail(message) {
  show($("error"), message);
  const panels = $("panels");
  if (!panels.children.length) return;
  panels.classList.add("stale");
  const why = message === "cancelled" ? "was cancelled" : "failed (see above)";
  show($("stale-note"), "The maps below are from the earlier settings, not these: the last request " + why + ".");
}

function fresh() {
  $("panels").classList.remove("stale");
  show($("stale-note"), "");
}

function option(select, value, text, selected = false) {
  const item = document.createElement("option");
  item.value = value;
  item.textContent = text;
  item.selected = selected;
  select.appendChild(item);
}

async function init() {
  const info = await api("/api/models");
  state.info = info;
  for (const model of info.models) option($("model"), model.name, model.name + (model.note ? " (" + model.note + ")" : ""));
  state.model = info.models[0].name;
  renderMethods(info.methods);
  if (info.bank) {
    option($("diffcam-source"), "bank", "the reference bank (" + info.bank.samples + " samples)", true);
  }
  if (info.data) option($("diffcam-source"), "data", "the data folder (a bank is built once)", !info.bank);
  if (info.analysis) {
    $("ifa-box").hidden = false;
    $("analysis-info").textContent = "analysis: " + info.analysis.method + " at " + info.analysis.layer + ", " + info.analysis.samples + " images";
  }
  const listing = await api("/api/photos");
  for (const name of listing.photos) {
    const button = document.createElement("button");
    button.type = "button";
    button.id = "photo-" + name;
    button.dataset.ref = "photo:" + name;
    button.title = name;
    button.innerHTML = '<img alt="' + name + '" src="/api/image?ref=photo:' + name + '&max_side=120"><span>' + name + "</span>";
    button.addEventListener("click", () => selectImage("photo:" + name, name));
    $("photos").appendChild(button);
  }
  // The classes of a bank of the data folder are its sub-folders.
  state.dataClasses = [...new Set(listing.data.filter((path) => path.includes("/")).map((path) => path.split("/")[0]))];
  if (listing.data.length) {
    $("data-box").hidden = false;
    for (const path of listing.data) option($("data-image"), "data:" + path, path);
  }
  await loadLayers();
  bindControls();
}

const GROUPS = [
  ["Gradient", (m) => ["cam", "gradcam", "gradcampp", "xgradcam", "layercam", "hirescam", "smoothgradcampp"].includes(m)],
  ["Comparisons", (m) => m.startsWith("finer-") || m === "diffcam"],
  ["Perturbation (slow)", (m) => ["scorecam", "sscam", "iscam", "ablationcam"].includes(m)],
  ["Projection", (m) => m.startsWith("eigen")],
  ["Other", () => true],
];

function renderMethods(methods) {
  const box = $("methods");
  const left = [...methods];
  for (const [title, member] of GROUPS) {
    const chosen = left.filter(member);
    if (!chosen.length) continue;
    for (const name of chosen) left.splice(left.indexOf(name), 1);
    const heading = document.createElement("div");
    heading.className = "group";
    heading.textContent = title;
    box.appendChild(heading);
    const order = ["gradcam", "finer-gradcam", "diffcam"];
    chosen.sort((a, b) => (order.includes(b) - order.includes(a)) || (order.indexOf(a) - order.indexOf(b)) || a.localeCompare(b));
    for (const name of chosen) {
      const label = document.createElement("label");
      const input = document.createElement("input");
      input.type = "checkbox";
      input.id = "method-" + name;
      input.value = name;
      input.checked = name === "gradcam";
      input.addEventListener("change", schedule);
      label.appendChild(input);
      label.appendChild(document.createTextNode(name + (SLOW.has(name) ? " (slow)" : "")));
      if (SLOW.has(name)) label.classList.add("slow");
      box.appendChild(label);
    }
  }
}

async function loadLayers() {
  const select = $("layer");
  select.innerHTML = "";
  try {
    const layers = await api("/api/layers?model=" + encodeURIComponent(state.model));
    for (const layer of layers.layers) {
      option(select, layer.name, layer.name + " [" + layer.shape.slice(1).join("x") + "]" + (layer.name === layers.default ? " (default)" : ""), layer.name === layers.default);
    }
  } catch (error) {
    fail(error.message);
  }
}

function bindControls() {
  $("model").addEventListener("change", async () => {
    state.model = $("model").value;
    await loadLayers();
    if (state.image) await predict();
  });
  $("layer").addEventListener("change", schedule);
  $("gamma").addEventListener("input", () => { $("gamma-value").textContent = $("gamma").value; });
  $("gamma").addEventListener("change", schedule);
  for (const id of ["diffcam-source", "diffcam-group", "diffcam-k", "diffcam-class", "scaled", "principal"]) {
    $(id).addEventListener("change", () => { updateDiffcamBoxes(); schedule(); });
  }
  $("data-image").addEventListener("change", () => { if ($("data-image").value) selectImage($("data-image").value, $("data-image").value.slice(5)); });
  $("upload").addEventListener("change", upload);
  $("explain").addEventListener("click", explain);
  $("cancel").addEventListener("click", async () => { await cancel(); busy(false); fail("cancelled"); });
  updateDiffcamBoxes();
}

function updateDiffcamBoxes() {
  const group = $("diffcam-group").value;
  const source = $("diffcam-source").value;
  const photos = source === "photos";
  const classes = source === "bank" ? state.info.bank.classes : (source === "data" ? state.dataClasses : []);
  const box = $("diffcam-class");
  if (box.dataset.source !== source) {
    box.dataset.source = source;
    box.innerHTML = "";
    for (const name of classes) option(box, name, name);
  }
  $("diffcam-group").disabled = photos;
  $("diffcam-k-box").hidden = photos || group !== "knn";
  $("diffcam-class-box").hidden = photos || group !== "class";
}

async function upload() {
  const file = $("upload").files[0];
  show($("upload-error"), "");
  if (!file) return;
  const form = new FormData();
  form.append("file", file);
  try {
    const stored = await api("/api/upload", { method: "POST", body: form });
    await selectImage(stored.image, stored.name);
  } catch (error) {
    show($("upload-error"), "Upload refused: " + error.message);
  } finally {
    $("upload").value = "";
  }
}

async function selectImage(ref, label) {
  state.image = ref;
  if (!ref.startsWith("upload:")) show($("upload-error"), "");
  for (const button of document.querySelectorAll(".photos button")) button.classList.toggle("selected", button.dataset.ref === ref);
  $("input-image").src = "/api/image?ref=" + encodeURIComponent(ref) + "&max_side=448";
  $("input-caption").textContent = label;
  await predict();
}

async function predict() {
  show($("error"), "");
  if (state.job) await cancel();  // a new image: the running job's maps are no longer wanted
  try {
    const result = await api("/api/predict", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ image: state.image, model: state.model }),
    });
    state.predictions = result.predictions;
    setTarget(result.predictions[0].class);
  } catch (error) {
    fail(error.message);
  }
}

function setTarget(cls) {
  state.target = cls;
  state.versus = state.predictions.filter((p) => p.class !== cls).slice(0, 3).map((p) => p.class);
  renderPredictions();
  renderVersus();
  schedule();
}

function renderPredictions() {
  const list = $("predictions");
  list.innerHTML = "";
  for (const p of state.predictions) {
    const item = document.createElement("li");
    item.dataset.class = p.class;
    item.textContent = (p.probability * 100).toFixed(1) + "%  " + p.name;
    item.classList.toggle("explained", p.class === state.target);
    item.addEventListener("click", () => setTarget(p.class));
    list.appendChild(item);
  }
}

function renderVersus() {
  const box = $("versus");
  box.innerHTML = "";
  for (const p of state.predictions) {
    if (p.class === state.target) continue;
    const label = document.createElement("label");
    const input = document.createElement("input");
    input.type = "checkbox";
    input.value = p.class;
    input.id = "versus-" + p.class;
    input.checked = state.versus.includes(p.class);
    input.addEventListener("change", () => {
      state.versus = [...box.querySelectorAll("input:checked")].map((i) => Number(i.value));
      schedule();
    });
    label.appendChild(input);
    label.appendChild(document.createTextNode(p.name + " (" + (p.probability * 100).toFixed(1) + "%)"));
    box.appendChild(label);
  }
}

function busy(flag) {
  document.body.dataset.busy = flag ? "1" : "0";
}

function schedule() {
  if (!state.image) return;
  busy(true);
  clearTimeout(state.timer);
  state.timer = setTimeout(explain, 250);
}

function request() {
  const methods = [...document.querySelectorAll("#methods input:checked")].map((i) => i.value);
  const group = $("diffcam-group").value;
  let reference = group;
  if (group === "knn") reference = "knn:" + $("diffcam-k").value;
  if (group === "class") reference = "class:" + $("diffcam-class").value;
  return {
    image: state.image, model: state.model, layer: $("layer").value || null, methods,
    target: state.target, versus: state.versus, gamma: Number($("gamma").value),
    source: $("diffcam-source").value, reference,
    scaled: $("scaled").checked, principal: $("principal").value === "" ? null : Number($("principal").value),
  };
}

async function explain() {
  clearTimeout(state.timer);
  if (!state.image) { show($("error"), "Choose an image first."); return; }
  busy(true);
  if (state.job) await cancel();
  show($("error"), "");
  try {
    const started = await api("/api/explain", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(request()),
    });
    state.job = started.job;
    $("status").dataset.job = started.job;
    $("status").hidden = false;
    $("status-text").textContent = "queued";
    $("progress").removeAttribute("value");
    poll(started.job);
  } catch (error) {
    fail(error.message);
    busy(false);
  }
}

async function cancel() {
  const job = state.job;
  state.job = null;
  $("status").hidden = true;
  if (job) {
    try { await api("/api/jobs/" + job, { method: "DELETE" }); } catch (error) { /* already gone */ }
  }
}

async function poll(job) {
  if (state.job !== job) return;
  let status;
  try {
    status = await api("/api/jobs/" + job);
  } catch (error) {
    fail(error.message);
    busy(false);
    return;
  }
  if (state.job !== job) return;
  const progress = status.progress || {};
  if (progress.total) {
    $("progress").max = progress.total;
    $("progress").value = progress.done;
    $("status-text").textContent = progress.description + ": " + progress.done + " / " + progress.total;
  } else {
    $("status-text").textContent = status.status;
  }
  if (status.status === "queued" || status.status === "running") {
    setTimeout(() => poll(job), state.pollDelay);
    return;
  }
  state.job = null;
  $("status").hidden = true;
  busy(false);
  if (status.status === "done") render(job, status.result);
  else if (status.status === "failed") fail(status.error);
  else fail("cancelled");
}

function render(job, result) {
  const box = $("panels");
  fresh();
  box.innerHTML = "";
  box.dataset.job = job;
  for (const panel of result.panels) box.appendChild(renderPanel(job, panel));
  $("downloads-all").innerHTML = '<a id="download-settings" href="/api/download/' + job + '/settings.json">settings of these maps (JSON)</a>';
}

function renderPanel(job, panel) {
  const base = "/api/download/" + job + "/" + encodeURIComponent(panel.key) + "/";
  const figure = document.createElement("figure");
  figure.className = "panel";
  figure.dataset.key = panel.key;
  figure.innerHTML =
    "<h3></h3><div class='caption'></div>" +
    '<img class="map" alt="map" src="' + base + 'overlay.png">' +
    legend(panel.signed) +
    '<div class="downloads">' +
    '<a class="download-png" href="' + base + 'overlay.png" download>PNG</a>' +
    '<a class="download-npy" href="' + base + 'map.npy" download>map .npy</a>' +
    '<a class="download-raw" href="' + base + 'raw.npy" download>raw .npy</a>' +
    '<a class="download-safetensors" href="' + base + 'maps.safetensors" download>.safetensors</a></div>';
  figure.querySelector("h3").textContent = panel.title;
  figure.querySelector(".caption").textContent = panel.caption + (panel.caption ? "; " : "") + "layer " + panel.layer;
  if (panel.references && panel.references.length) {
    const list = document.createElement("ul");
    list.className = "refs";
    for (const r of panel.references) {
      const item = document.createElement("li");
      item.textContent = "vs " + r.name + " (" + (r.probability * 100).toFixed(1) + "%)";
      list.appendChild(item);
    }
    figure.appendChild(list);
  }
  if (panel.contributions.length) figure.appendChild(chart("channel contributions (top " + panel.contributions.length + ")", panel.contributions.map((c) => ["ch " + c.channel, c.value])));
  if (panel.principal_features && panel.principal_features.length) {
    figure.appendChild(chart("principal features (share of the class's importance)", panel.principal_features.map((f) => ["f " + f.feature, f.share])));
  }
  return figure;
}

function legend(signed) {
  if (signed) {
    return '<div class="legend"><div class="bar diverging"></div><div class="ticks"><span>-1 against</span><span>0</span><span>+1 for</span></div></div>';
  }
  return '<div class="legend"><div class="bar jet"></div><div class="ticks"><span>0</span><span>map value</span><span>1</span></div></div>';
}

function chart(title, rows) {
  const box = document.createElement("div");
  box.className = "chart";
  const heading = document.createElement("h4");
  heading.textContent = title;
  box.appendChild(heading);
  const width = 224, row = 13, labelWidth = 50;
  const largest = Math.max(...rows.map((r) => Math.abs(r[1])), 1e-12);
  const anyNegative = rows.some((r) => r[1] < 0);
  const zero = labelWidth + (anyNegative ? (width - labelWidth) / 2 : 0);
  const scale = (width - labelWidth) / (anyNegative ? 2 : 1) / largest;
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("width", width);
  svg.setAttribute("height", rows.length * row + 2);
  rows.forEach(([label, value], i) => {
    const text = document.createElementNS(ns, "text");
    text.setAttribute("x", 0);
    text.setAttribute("y", i * row + 10);
    text.setAttribute("font-size", "10");
    text.textContent = label;
    svg.appendChild(text);
    const bar = document.createElementNS(ns, "rect");
    const length = Math.abs(value) * scale;
    bar.setAttribute("x", value >= 0 ? zero : zero - length);
    bar.setAttribute("y", i * row + 2);
    bar.setAttribute("width", Math.max(length, 0.5));
    bar.setAttribute("height", row - 4);
    bar.setAttribute("fill", value >= 0 ? "#c0392b" : "#2e6fb0");
    const tip = document.createElementNS(ns, "title");
    tip.textContent = label + ": " + value.toPrecision(4);
    bar.appendChild(tip);
    svg.appendChild(bar);
  });
  box.appendChild(svg);
  return box;
}

busy(false);
init().catch((error) => fail(error.message));
