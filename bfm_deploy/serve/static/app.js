// The bfm web page: verify two photos, and the gallery when the server has one. It only calls this server's /v1/
// API (relative URLs, so it also works behind a path prefix), with the key typed in the header; the key lives in
// this tab's sessionStorage and nowhere else. Every failure is shown as one line: the API's {"error": ...}, or
// what went wrong on the way.
"use strict";

const KEY_STORAGE = "bfm-api-key";
const CASES = { 1: "both unmasked", 2: "one masked", 3: "both masked" };
const SVG = "http://www.w3.org/2000/svg";

const $ = (selector, root = document) => root.querySelector(selector);

// -- talking to the API -------------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, line) {
    super(line);
    this.status = status;
  }
}

function oneLine(text) {
  return String(text).replace(/\s+/g, " ").trim();
}

// fetch one API path; resolves to the parsed JSON of a 2xx answer, rejects with an ApiError holding one line
async function api(method, path, body) {
  const headers = {};
  const key = sessionStorage.getItem(KEY_STORAGE);
  if (key) headers["X-API-Key"] = key;
  if (body !== undefined && !(body instanceof FormData)) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, { method, headers, body, credentials: "omit" });
  } catch (error) {
    throw new ApiError(0, oneLine(`network error: cannot reach the server (${error.message || error})`));
  }
  let data = null;
  try {
    data = await response.json();
  } catch (_) {
    data = null;
  }
  if (!response.ok) {
    const line = data && typeof data.error === "string" ? data.error : `${response.status} ${response.statusText}`;
    throw new ApiError(response.status, oneLine(line));
  }
  if (data === null) throw new ApiError(response.status, "the server's answer is not JSON");
  return data;
}

function showError(element, error) {
  element.textContent = error instanceof ApiError ? error.message : oneLine(`error: ${error.message || error}`);
  element.hidden = false;
}

function clearError(element) {
  element.textContent = "";
  element.hidden = true;
}

function fileAsBase64(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).split(",", 2)[1] || "");
    reader.onerror = () => reject(new Error(`cannot read ${file.name}`));
    reader.readAsDataURL(file);
  });
}

// -- the views ----------------------------------------------------------------------------------------------

function showView(name) {
  for (const view of ["verify", "gallery"]) {
    $(`#view-${view}`).hidden = view !== name;
    $(`#tab-${view}`).setAttribute("aria-selected", String(view === name));
  }
  if (name === "gallery") refreshGallery();
  if (location.hash !== `#${name}`) history.replaceState(null, "", `#${name}`);
}

// -- verify: the two photo slots ----------------------------------------------------------------------------

class Slot {
  constructor(root, onChange) {
    this.root = root;
    this.side = root.dataset.side;
    this.file = null;
    this.onChange = onChange;
    this.image = $(".photo img", root);
    this.marks = $(".marks", root);
    this.stream = null;
    $(".file", root).addEventListener("change", (event) => {
      if (event.target.files.length) this.set(event.target.files[0]);
    });
    const drop = $(".drop", root);
    drop.addEventListener("dragover", (event) => {
      event.preventDefault();
      drop.classList.add("over");
    });
    drop.addEventListener("dragleave", () => drop.classList.remove("over"));
    drop.addEventListener("drop", (event) => {
      event.preventDefault();
      drop.classList.remove("over");
      const file = [...(event.dataTransfer ? event.dataTransfer.files : [])].find((f) => f.type.startsWith("image/"));
      if (file) this.set(file);
    });
    const camera = $(".camera", root);
    // the camera only where the browser offers it (a secure context: https, or this machine's loopback)
    camera.hidden = !(navigator.mediaDevices && navigator.mediaDevices.getUserMedia);
    camera.addEventListener("click", () => this.openCamera());
    $(".snap", root).addEventListener("click", () => this.snap());
    $(".cancel", root).addEventListener("click", () => this.closeCamera());
  }

  set(file) {
    this.file = file;
    if (this.image.src.startsWith("blob:")) URL.revokeObjectURL(this.image.src);
    this.image.src = URL.createObjectURL(file);
    this.image.hidden = false;
    this.marks.replaceChildren();
    this.root.classList.add("filled");
    this.onChange();
  }

  async openCamera() {
    const error = $("#verify-error");
    clearError(error);
    try {
      this.stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "user" }, audio: false });
    } catch (failure) {
      showError(error, new Error(`camera: ${failure.message || failure.name}`));
      return;
    }
    const video = $("video", this.root);
    video.srcObject = this.stream;
    await video.play();
    $(".camera-box", this.root).hidden = false;
  }

  snap() {
    const video = $("video", this.root);
    const canvas = document.createElement("canvas");
    canvas.width = video.videoWidth;
    canvas.height = video.videoHeight;
    canvas.getContext("2d").drawImage(video, 0, 0);
    canvas.toBlob((blob) => {
      if (blob) this.set(new File([blob], `camera-${this.side}.jpg`, { type: "image/jpeg" }));
    }, "image/jpeg", 0.92);
    this.closeCamera();
  }

  closeCamera() {
    if (this.stream) this.stream.getTracks().forEach((track) => track.stop());
    this.stream = null;
    $("video", this.root).srcObject = null;
    $(".camera-box", this.root).hidden = true;
  }

  // the detector's box and landmarks over the photo, in the photo's own pixels (the SVG's viewBox)
  mark(face) {
    this.marks.replaceChildren();
    if (!face || !face.box || !this.image.naturalWidth) return;
    this.marks.setAttribute("viewBox", `0 0 ${this.image.naturalWidth} ${this.image.naturalHeight}`);
    const [x1, y1, x2, y2] = face.box;
    const stroke = Math.max(2, this.image.naturalWidth / 150);
    const box = document.createElementNS(SVG, "rect");
    for (const [name, value] of [["x", x1], ["y", y1], ["width", x2 - x1], ["height", y2 - y1],
      ["stroke-width", stroke]]) box.setAttribute(name, value);
    box.setAttribute("class", "box");
    this.marks.append(box);
    for (const [x, y] of face.landmarks || []) {
      const dot = document.createElementNS(SVG, "circle");
      dot.setAttribute("cx", x);
      dot.setAttribute("cy", y);
      dot.setAttribute("r", stroke * 1.2);
      dot.setAttribute("class", "landmark");
      this.marks.append(dot);
    }
  }
}

function percent(value) {
  return `${(100 * value).toFixed(1)}%`;
}

function showResult(result, slots) {
  $("#decision").textContent = result.same ? "Same person" : "Different people";
  $("#decision").dataset.same = String(result.same);
  $("#score").textContent = result.score.toFixed(4);
  $("#threshold").textContent = `${result.threshold.toFixed(4)} (${result.route} route)`;
  $("#route").textContent = result.route === "full" ? "full face (E_F)" : "partial face (E_P)";
  $("#case").textContent = `${result.case}: ${CASES[result.case] || "?"}`;
  // the meter runs over scores -0.2..1: where the score and the threshold sit
  const place = (value) => `${Math.min(100, Math.max(0, ((value + 0.2) / 1.2) * 100))}%`;
  $(".meter .fill").style.width = place(result.score);
  $(".meter .cut").style.left = place(result.threshold);
  $(".meter").classList.toggle("same", result.same);
  $("#note").textContent = result.note || "";
  $("#note").hidden = !result.note;
  ["a", "b"].forEach((side, i) => {
    const figure = $(`#face-${side}`);
    const face = result.faces ? result.faces[i] : null;
    $("img", figure).src = face ? face.crop : "";
    $("figcaption", figure).textContent =
      `${side.toUpperCase()}: mask ${percent(result.mask_probability[i])}, found by ${result.found_by[i]}`;
    slots[i].mark(face);
  });
  $("#result").hidden = false;
}

let verifyRun = 0; // which verify the page shows: a late answer to an earlier one is dropped

async function explain(form, run) {
  const status = $("#explain-status");
  const error = $("#explain-error");
  status.hidden = false;
  status.textContent = "asking the server for the explanation maps...";
  clearError(error);
  $("#explain").hidden = true;
  try {
    const answer = await api("POST", "v1/explain", form);
    if (run !== verifyRun) return;
    (answer.faces || []).slice(0, 2).forEach((face, i) => {
      const figure = $(`#explain-${"ab"[i]}`);
      $("img", figure).src = face.overlay;
      const share = typeof face.mask_region_share === "number" ? percent(face.mask_region_share) : "?";
      $("figcaption", figure).textContent =
        `${"AB"[i]}: E_${face.network === "partial" ? "P" : "F"}, ${share} of the saliency on the mask region`;
    });
    status.hidden = true;
    $("#explain").hidden = false;
  } catch (failure) {
    if (run !== verifyRun) return;
    status.hidden = true;
    showError(error, failure);
  }
}

function setUpVerify() {
  const button = $("#verify");
  const slots = [];
  const changed = () => {
    button.disabled = !slots.every((slot) => slot.file);
  };
  const picked = () => { // a new photo: the shown answer was about another pair
    verifyRun += 1;
    $("#result").hidden = true;
    clearError($("#verify-error"));
    changed();
  };
  slots.push(new Slot($("#slot-a"), picked), new Slot($("#slot-b"), picked));
  button.addEventListener("click", async () => {
    const error = $("#verify-error");
    clearError(error);
    $("#result").hidden = true;
    slots.forEach((slot) => slot.mark(null));
    const form = () => {
      const body = new FormData();
      body.append("a", slots[0].file, slots[0].file.name || "a");
      body.append("b", slots[1].file, slots[1].file.name || "b");
      return body;
    };
    button.disabled = true;
    const run = ++verifyRun;
    try {
      const result = await api("POST", "v1/verify?detail=true", form());
      if (run === verifyRun) showResult(result, slots);
    } catch (failure) {
      if (run === verifyRun) showError(error, failure);
      return;
    } finally {
      changed();
    }
    explain(form(), run);
  });
}

// -- gallery ------------------------------------------------------------------------------------------------

async function refreshGallery() {
  const status = $("#gallery-status");
  const error = $("#gallery-error");
  clearError(error);
  let listing;
  try {
    listing = await api("GET", "v1/gallery/identities");
  } catch (failure) {
    $("#gallery").hidden = true;
    status.hidden = failure.status !== 404;
    if (failure.status === 404) {
      status.hidden = false;
      status.textContent = "This server has no gallery: start bfm-serve with --gallery FOLDER to enrol and identify.";
    }
    showError(error, failure);
    return;
  }
  status.hidden = true;
  $("#gallery").hidden = false;
  const list = $("#identities");
  list.replaceChildren();
  for (const person of listing.identities) {
    const item = document.createElement("li");
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = person.identity;
    const count = document.createElement("span");
    count.className = "count";
    count.textContent = `${person.faces} face${person.faces === 1 ? "" : "s"}, ${person.masked} masked`;
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "small remove";
    remove.textContent = "remove";
    remove.addEventListener("click", async () => {
      clearError(error);
      try {
        await api("DELETE", `v1/gallery/identities/${encodeURIComponent(person.identity)}`);
      } catch (failure) {
        showError(error, failure);
        return;
      }
      refreshGallery();
    });
    item.append(name, count, remove);
    list.append(item);
  }
  if (!listing.identities.length) {
    const empty = document.createElement("li");
    empty.className = "note";
    empty.textContent = "nobody enrolled yet";
    list.append(empty);
  }
  const open = listing.open_set || {};
  $("#open-set").textContent = `open-set thresholds on the margin: full ${open.full}, partial ${open.partial}` +
    (open.calibration ? ` (${open.calibration})` : "");
}

async function filesAsBase64(input) {
  return Promise.all([...input.files].map(fileAsBase64));
}

function setUpGallery() {
  $("#refresh").addEventListener("click", refreshGallery);
  $("#enroll").addEventListener("submit", async (event) => {
    event.preventDefault();
    const error = $("#gallery-error");
    const answer = $("#enroll-answer");
    clearError(error);
    answer.hidden = true;
    try {
      const images = await filesAsBase64($("#enroll-files"));
      const body = { identity: $("#enroll-name").value, images, extend: $("#enroll-extend").checked };
      const enrolled = await api("POST", "v1/gallery/enroll", body);
      answer.textContent = `enrolled ${enrolled.identity}: ${enrolled.face_ids.length} face` +
        `${enrolled.face_ids.length === 1 ? "" : "s"} (${enrolled.masked} masked)`;
      answer.hidden = false;
    } catch (failure) {
      showError(error, failure);
      return;
    }
    refreshGallery();
  });
  $("#identify").addEventListener("submit", async (event) => {
    event.preventDefault();
    const error = $("#gallery-error");
    const out = $("#identify-answer");
    clearError(error);
    out.replaceChildren();
    let answer;
    const files = [...$("#identify-files").files];
    try {
      const images = await Promise.all(files.map(fileAsBase64));
      answer = await api("POST", "v1/gallery/identify", { images, top_k: Number($("#identify-k").value) });
    } catch (failure) {
      showError(error, failure);
      return;
    }
    answer.probes.forEach((probe, i) => out.append(probeView(files[i] ? files[i].name : `probe ${i + 1}`, probe)));
  });
}

function probeView(name, probe) {
  const box = document.createElement("div");
  box.className = "probe";
  const head = document.createElement("p");
  head.className = "who";
  if (probe.error) {
    head.classList.add("error");
    head.textContent = `${name}: ${oneLine(probe.error)}`;
    box.append(head);
    return box;
  }
  head.textContent = `${name}: ${probe.identity === null ? "unknown" : probe.identity}` +
    ` (mask ${percent(probe.mask_probability)})`;
  head.dataset.identity = probe.identity === null ? "" : probe.identity;
  box.append(head);
  if (probe.candidates.length) {
    const table = document.createElement("table");
    const header = table.insertRow();
    for (const title of ["candidate", "score", "route", "margin", "over open set"]) {
      const cell = document.createElement("th");
      cell.textContent = title;
      header.append(cell);
    }
    for (const c of probe.candidates) {
      const row = table.insertRow();
      for (const value of [c.identity, c.score.toFixed(3), c.route, c.margin.toFixed(3), c.over_open_set.toFixed(3)]) {
        row.insertCell().textContent = value;
      }
      row.classList.toggle("match", c.over_open_set >= 0);
    }
    box.append(table);
  }
  return box;
}

// -- start --------------------------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  const key = $("#api-key");
  key.value = sessionStorage.getItem(KEY_STORAGE) || "";
  key.addEventListener("input", () => {
    if (key.value) sessionStorage.setItem(KEY_STORAGE, key.value);
    else sessionStorage.removeItem(KEY_STORAGE);
  });
  key.addEventListener("change", () => {
    if (!$("#view-gallery").hidden) refreshGallery();
  });
  $("#tab-verify").addEventListener("click", () => showView("verify"));
  $("#tab-gallery").addEventListener("click", () => showView("gallery"));
  setUpVerify();
  setUpGallery();
  showView(location.hash === "#gallery" ? "gallery" : "verify");
});
