// ferlab serve: send a photo or webcam frames to /v1/analyze and draw the faces found.
"use strict";

const COLORS = ["#0b57d0", "#b3261e", "#146c2e", "#7d3c98", "#a15c00", "#006a6a"];
const FRAME_MS = 500;

const $ = (id) => document.getElementById(id);
const canvas = $("canvas");
const context = canvas.getContext("2d");
const statusLine = $("status");
const facesList = $("faces");
const video = $("video");
const webcamButton = $("webcam-toggle");

let request = 0; // the latest request's number: answers to older ones are dropped
let webcam = null; // {stream, timer, frames} while the webcam runs

function setStatus(text, isError = false) {
  // The region is aria-live: an unchanged text is not set again, so webcam frames stay quiet.
  if (statusLine.textContent !== text) statusLine.textContent = text;
  statusLine.classList.toggle("error", isError);
}

function percent(p) {
  return `${Math.round(p * 100)}%`;
}

async function post(body, type) {
  const response = await fetch("/v1/analyze", {
    method: "POST",
    headers: { "Content-Type": type || "application/octet-stream" },
    body,
  });
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = answer.error || { code: "http_" + response.status, message: response.statusText };
    const failure = new Error(error.message);
    failure.code = error.code;
    failure.retryAfter = Number(response.headers.get("Retry-After") || 0);
    throw failure;
  }
  return answer;
}

function draw(image, result) {
  canvas.width = image.width;
  canvas.height = image.height;
  context.drawImage(image, 0, 0);
  const sx = image.width / (result.image.width || image.width);
  const sy = image.height / (result.image.height || image.height);
  const line = Math.max(2, Math.round(image.width / 250));
  const fontSize = Math.max(14, Math.round(image.width / 32));
  context.font = `600 ${fontSize}px system-ui, sans-serif`;
  context.textBaseline = "top";
  result.faces.forEach((face, i) => {
    const color = COLORS[i % COLORS.length];
    const x = face.box.x * sx;
    const y = face.box.y * sy;
    const w = face.box.w * sx;
    const h = face.box.h * sy;
    context.lineWidth = line;
    context.strokeStyle = color;
    context.strokeRect(x, y, w, h);
    const label = `${i + 1} ${face.emotion} ${percent(face.probability)}`;
    const width = context.measureText(label).width + 2 * line + 8;
    const top = y - fontSize - 8 >= 0 ? y - fontSize - 8 : y + h;
    context.fillStyle = color;
    context.fillRect(x - line / 2, top, width, fontSize + 8);
    context.fillStyle = "#ffffff";
    context.fillText(label, x + line + 2, top + 4);
  });
  const described = result.faces.map((face, i) => `face ${i + 1} ${face.emotion}`).join(", ");
  canvas.setAttribute(
    "aria-label",
    result.faces.length ? `The photo, with boxes around ${described}` : "The photo; no face found",
  );
}

function faceItem(face, i) {
  const item = document.createElement("li");
  item.className = "face";
  item.style.setProperty("--face-color", COLORS[i % COLORS.length]);
  const title = document.createElement("h3");
  title.textContent = `Face ${i + 1}: ${face.emotion} (${percent(face.probability)})`;
  const bars = document.createElement("dl");
  bars.className = "bars";
  const ranked = Object.entries(face.probabilities).sort((a, b) => b[1] - a[1]);
  for (const [name, p] of ranked) {
    const term = document.createElement("dt");
    term.textContent = name;
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.setAttribute("aria-hidden", "true");
    const fill = document.createElement("span");
    fill.style.width = percent(p);
    bar.append(fill);
    const value = document.createElement("span");
    value.className = "value";
    value.textContent = percent(p);
    const detail = document.createElement("dd");
    detail.append(bar, value);
    if (name === face.emotion) {
      term.classList.add("top");
      detail.classList.add("top");
    }
    bars.append(term, detail);
  }
  item.append(title, bars);
  return item;
}

function show(image, result, live) {
  draw(image, result);
  facesList.replaceChildren(...result.faces.map(faceItem));
  const count = result.faces.length;
  const found = count === 0 ? "No face found" : count === 1 ? "1 face found" : `${count} faces found`;
  if (live) {
    const emotions = result.faces.map((face) => face.emotion).join(", ");
    setStatus(`Webcam: ${found}${count ? ": " + emotions : ""}.`);
  } else {
    const size = `${result.image.width}×${result.image.height}`;
    setStatus(`${found} (${size}, ${result.seconds.toFixed(2)} s).`);
  }
}

async function analyzeFile(file) {
  stopWebcam();
  if (!file) return;
  const mine = ++request;
  setStatus(`Analysing ${file.name}…`);
  let image;
  try {
    image = await createImageBitmap(file, { imageOrientation: "from-image" });
  } catch {
    image = null; // the browser cannot show it; the server may still read it
  }
  try {
    const result = await post(file, file.type);
    if (mine !== request) return;
    if (image) {
      show(image, result, false);
    } else {
      facesList.replaceChildren(...result.faces.map(faceItem));
      setStatus(`${result.faces.length} face(s) found; this browser cannot display the photo.`);
    }
  } catch (error) {
    if (mine !== request) return;
    facesList.replaceChildren();
    setStatus(`Could not analyse ${file.name}: ${error.message} (${error.code}).`, true);
  }
}

async function startWebcam() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    setStatus("This browser offers no webcam here (it needs https or localhost).", true);
    return;
  }
  setStatus("Starting the webcam…");
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 } });
  } catch (error) {
    setStatus(`No webcam: ${error.message}`, true);
    return;
  }
  request++;
  video.srcObject = stream;
  await video.play();
  webcam = { stream, timer: 0, frames: 0 };
  webcamButton.textContent = "Stop webcam";
  webcamButton.setAttribute("aria-pressed", "true");
  setStatus("Webcam on: analysing frames…");
  nextFrame();
}

function stopWebcam() {
  if (!webcam) return;
  clearTimeout(webcam.timer);
  webcam.stream.getTracks().forEach((track) => track.stop());
  webcam = null;
  request++;
  video.srcObject = null;
  webcamButton.textContent = "Start webcam";
  webcamButton.setAttribute("aria-pressed", "false");
  setStatus("Webcam off.");
}

async function nextFrame() {
  const session = webcam;
  if (!session) return;
  const started = performance.now();
  let wait = FRAME_MS;
  const frame = document.createElement("canvas");
  frame.width = video.videoWidth || 640;
  frame.height = video.videoHeight || 480;
  frame.getContext("2d").drawImage(video, 0, 0, frame.width, frame.height);
  const blob = await new Promise((resolve) => frame.toBlob(resolve, "image/jpeg", 0.85));
  try {
    const result = await post(blob, "image/jpeg");
    if (session !== webcam) return;
    session.frames++;
    statusLine.dataset.frames = String(session.frames);
    show(frame, result, true);
    wait = Math.max(0, FRAME_MS - (performance.now() - started));
  } catch (error) {
    if (session !== webcam) return;
    setStatus(`Webcam: ${error.message} (${error.code}).`, true);
    // 503 overloaded and 429 too_many_requests say when to try again.
    if (error.retryAfter) wait = Math.max(wait, 1000 * error.retryAfter);
  }
  session.timer = setTimeout(nextFrame, wait);
}

async function showModelFacts() {
  try {
    const facts = await (await fetch("/v1/model")).json();
    const accuracy = facts.accuracy && facts.accuracy.public_test;
    const measured = accuracy
      ? `${percent(accuracy)} right on FER2013's public test faces`
      : "accuracy not measured";
    $("model-facts").textContent =
      `Model ${facts.name} (${facts.version}): ${measured}. ` +
      "It names the expression a face shows, not what the person feels.";
  } catch {
    $("model-facts").textContent = "The model's facts could not be loaded.";
  }
}

function setUp() {
  $("file").addEventListener("change", (event) => analyzeFile(event.target.files[0]));
  const zone = $("drop-zone");
  for (const name of ["dragenter", "dragover"]) {
    zone.addEventListener(name, (event) => {
      event.preventDefault();
      zone.classList.add("dragging");
    });
  }
  for (const name of ["dragleave", "drop"]) {
    zone.addEventListener(name, () => zone.classList.remove("dragging"));
  }
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    const file = event.dataTransfer.files[0];
    if (file) analyzeFile(file);
  });
  // A photo dropped beside the zone must not replace the page.
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => event.preventDefault());
  webcamButton.addEventListener("click", () => (webcam ? stopWebcam() : startWebcam()));
  showModelFacts();
}

setUp();
