"use strict";
// The page: a Render tab (upload or record, render on the server, play the MP4) and a Live tab
// (the microphone or a file streamed to an avatar: over WebRTC, webrtc.js, or the WebSocket
// fallback, JPEG frames shown on the audio's clock). It talks to the page's server only
// (synctalk_web.app, which mounts the WebRTC service's /offer).

const SAMPLE_RATE = 16000; // what the server takes: the AudioContext resamples to it
const FPS = 25;
const JITTER_MS = 120; // frames are shown this long after the first one could be, to absorb jitter
const $ = (id) => document.getElementById(id);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function say(element, text) {
  element.textContent = text || "";
  element.hidden = !text;
}

// --- tabs and the model list ----------------------------------------------------------------
document.querySelectorAll(".tab").forEach((button) =>
  button.addEventListener("click", () => {
    document.querySelectorAll(".tab").forEach((t) => t.classList.toggle("active", t === button));
    document.querySelectorAll(".panel").forEach((p) => (p.hidden = p.id !== button.dataset.tab));
    loadModels();
  }),
);

async function api(path, options) {
  let response;
  try {
    response = await fetch(path, options);
  } catch (error) {
    throw new Error(`the page's server does not answer (${error.message})`);
  }
  let body = null;
  try {
    body = await response.json();
  } catch (error) {
    throw new Error(`HTTP ${response.status} from the page's server`);
  }
  if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
  return body;
}

async function loadModels() {
  document.body.dataset.models = "loading";
  try {
    const { models, note } = await api("/api/models");
    cold.clear();
    models.filter((m) => m.ready === false).forEach((m) => cold.add(m.id));
    say($("models-error"), "");
    say($("models-note"), note);
    fill($("render-model"), models, false);
    fill($("live-model"), models, true);
  } catch (error) {
    say($("models-error"), error.message);
  } finally {
    document.body.dataset.models = "loaded";
  }
}

function fill(select, models, avatarsOnly) {
  const current = select.value;
  const shown = models.filter((m) => !avatarsOnly || m.avatar);
  select.replaceChildren(
    ...shown.map((m) => {
      const option = document.createElement("option");
      option.value = m.id;
      option.textContent =
        m.ready === false ? `${m.id} (avatar, loaded when chosen)` : m.avatar ? `${m.id} (avatar, ${m.images} images)` : m.id;
      return option;
    }),
  );
  if (!shown.length) {
    const option = document.createElement("option");
    option.value = "";
    option.textContent = avatarsOnly ? "no avatar loaded (synctalk-avatars add)" : "no model loaded";
    select.append(option);
  }
  if (shown.some((m) => m.id === current)) select.value = current;
}

// --- avatars stored but not loaded (an edge with an activator loads one on its first use) ----
// warmed up once chosen, or before a session or a render at the latest: the page says "loading
// the avatar" then, once, before any speech
const cold = new Set();
const warming = new Map(); // avatar -> its warm-up under way

function warmUp(avatar, status) {
  if (!cold.has(avatar)) return Promise.resolve();
  if (!warming.has(avatar)) {
    const request = { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ id: avatar }) };
    warming.set(
      avatar,
      api("/api/warm", request)
        .then(() => cold.delete(avatar))
        .finally(() => warming.delete(avatar)),
    );
  }
  status.textContent = "loading the avatar…";
  return warming.get(avatar);
}

$("live-model").addEventListener("change", () => {
  const avatar = $("live-model").value;
  if (!cold.has(avatar) || $("live-start").disabled) return;
  say($("live-error"), "");
  warmUp(avatar, $("live-status")).then(
    () => !$("live-start").disabled && ($("live-status").textContent = "avatar loaded"),
    (error) => say($("live-error"), error.message),
  );
});

// --- audio: one 16 kHz context for decoding, capture and playback ---------------------------
let audioContext = null;

async function context() {
  if (!audioContext) {
    audioContext = new AudioContext({ sampleRate: SAMPLE_RATE });
    await audioContext.audioWorklet.addModule("/static/pcm-tap.js");
  }
  if (audioContext.state === "suspended") await audioContext.resume();
  return audioContext;
}

async function microphone(onBlock) {
  const ctx = await context();
  if (!navigator.mediaDevices) throw new Error("the microphone needs the page opened as http://127.0.0.1 or https");
  let media;
  try {
    media = await navigator.mediaDevices.getUserMedia({ audio: { channelCount: 1, echoCancellation: true } });
  } catch (error) {
    throw new Error(`the microphone is not available: ${error.message}`);
  }
  const source = ctx.createMediaStreamSource(media);
  const tap = new AudioWorkletNode(ctx, "pcm-tap");
  const mute = ctx.createGain();
  mute.gain.value = 0; // a worklet runs while it reaches the destination: silently
  tap.port.onmessage = (event) => onBlock(event.data);
  source.connect(tap).connect(mute).connect(ctx.destination);
  return () => {
    tap.port.onmessage = null; // blocks the worklet posted before it stopped are not delivered
    source.disconnect();
    tap.disconnect();
    media.getTracks().forEach((track) => track.stop());
  };
}

function mono(buffer) {
  const out = new Float32Array(buffer.length);
  for (let c = 0; c < buffer.numberOfChannels; c++) {
    const data = buffer.getChannelData(c);
    for (let i = 0; i < out.length; i++) out[i] += data[i] / buffer.numberOfChannels;
  }
  return out;
}

function concat(blocks) {
  const out = new Float32Array(blocks.reduce((n, b) => n + b.length, 0));
  let at = 0;
  for (const block of blocks) {
    out.set(block, at);
    at += block.length;
  }
  return out;
}

function wavBlob(samples, rate) {
  const view = new DataView(new ArrayBuffer(44 + samples.length * 2));
  const text = (at, s) => [...s].forEach((ch, i) => view.setUint8(at + i, ch.charCodeAt(0)));
  text(0, "RIFF");
  view.setUint32(4, 36 + samples.length * 2, true);
  text(8, "WAVEfmt ");
  view.setUint32(16, 16, true);
  view.setUint16(20, 1, true); // PCM
  view.setUint16(22, 1, true); // mono
  view.setUint32(24, rate, true);
  view.setUint32(28, rate * 2, true);
  view.setUint16(32, 2, true);
  view.setUint16(34, 16, true);
  text(36, "data");
  view.setUint32(40, samples.length * 2, true);
  samples.forEach((s, i) => view.setInt16(44 + i * 2, Math.max(-1, Math.min(1, s)) * 32767, true));
  return new Blob([view], { type: "audio/wav" });
}

// --- Render ------------------------------------------------------------------------------------
const rec = { blob: null, stop: null, blocks: [] };

$("render-record").addEventListener("click", async () => {
  say($("render-error"), "");
  if (rec.stop) {
    rec.stop();
    rec.stop = null;
    const samples = concat(rec.blocks);
    rec.blob = wavBlob(samples, SAMPLE_RATE);
    $("render-record").textContent = "Record again";
    $("render-recorded").textContent = `recorded ${(samples.length / SAMPLE_RATE).toFixed(1)} s`;
    return;
  }
  try {
    rec.blocks = [];
    rec.stop = await microphone((block) => rec.blocks.push(block));
    $("render-audio").value = "";
    $("render-record").textContent = "Stop recording";
    $("render-recorded").textContent = "recording…";
  } catch (error) {
    say($("render-error"), error.message);
  }
});

$("render-audio").addEventListener("change", () => {
  rec.blob = null;
  $("render-recorded").textContent = "";
});

$("render-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const progress = $("render-progress");
  say($("render-error"), "");
  $("render-result").hidden = true;
  const file = $("render-audio").files[0];
  if (!file && !rec.blob) {
    say($("render-error"), "choose an audio file or record one first");
    return;
  }
  const form = new FormData();
  form.append("model_id", $("render-model").value);
  form.append("start_frame", $("render-start").value || "0");
  form.append("loop_back", $("render-loop-back").checked ? "true" : "false");
  form.append("audio", file || rec.blob, file ? file.name : "recording.wav");
  $("render-go").disabled = true;
  progress.hidden = false;
  progress.value = 0;
  try {
    await warmUp($("render-model").value, $("render-status"));
    $("render-status").textContent = "uploading…";
    let job = await api("/api/render", { method: "POST", body: form });
    while (job.state === "rendering") {
      progress.value = job.batches ? job.done / job.batches : 0;
      $("render-status").textContent = `rendering ${job.audio_seconds} s of audio: batch ${job.done} of ${job.batches || "…"}`;
      await sleep(250);
      job = await api(`/api/render/${job.id}`);
    }
    if (job.state === "error") throw new Error(job.error);
    progress.value = 1;
    showRender(job);
  } catch (error) {
    say($("render-error"), error.message);
    $("render-status").textContent = "";
    progress.hidden = true;
  } finally {
    $("render-go").disabled = false;
  }
});

const STAGES = [
  ["validation_ms", "validation (the door)"],
  ["audio_processing_ms", "audio: mel windows and encoder"],
  ["inference_time_ms", "generator"],
  ["composite_time_ms", "paste-back and JPEG"],
  ["queue_time_ms", "waiting in the steps' queues"],
];

function showRender(job) {
  const s = job.summary;
  const video = $("render-video");
  video.onerror = () => say($("render-error"), "this browser cannot play the MP4 (H.264 + AAC): download it instead");
  video.src = job.video;
  $("render-download").href = `${job.video}?download=${encodeURIComponent(job.model_id)}.mp4`;
  $("render-status").textContent = `${s.frames} frames (${s.seconds.toFixed(2)} s) in ${s.wall_s.toFixed(2)} s`;
  const rows = [
    ["the whole render (wall clock, with the MP4)", s.wall_s * 1000],
    ...STAGES.map(([key, label]) => [`server: ${label}`, s.stages_ms[key]]),
  ];
  $("render-timings").tBodies[0].replaceChildren(
    ...rows.map(([label, ms]) => {
      const row = document.createElement("tr");
      row.innerHTML = `<td></td><td class="ms">${ms.toFixed(1)} ms</td>`;
      row.cells[0].textContent = label;
      return row;
    }),
  );
  $("render-result").hidden = false;
}

// --- Live --------------------------------------------------------------------------------------
let live = null;

function newLive() {
  return {
    socket: null, stopSource: null, flush: null, ending: false, timer: null, playout: null, audio: null,
    fileBuffer: null, text: $("live-source-text").checked, control: null, speaking: [],
    t0: 0, firstArrival: null, clock: null, frames: new Map(), received: 0, shown: -1,
    delays: [], ended: false, failed: false, pc: null, stats: [], statsTimer: null,
    chunk: Math.round((Number($("live-chunk").value) * SAMPLE_RATE) / 1000), // samples a request
  };
}

function liveError(message) {
  if (!live || live.failed) return;
  live.failed = true;
  say($("live-error"), message);
  stopSource();
  $("live-status").textContent = "stopped";
  $("live-start").disabled = false;
}

function stopSource() {
  if (live.statsTimer) clearInterval(live.statsTimer);
  live.statsTimer = null;
  if (live.timer) clearInterval(live.timer);
  live.timer = null;
  if (live.stopSource) live.stopSource();
  live.stopSource = null;
  $("live-stop").disabled = true;
}

// Stop (or the file's last sample): what the source holds is sent, then the end; nothing after it
function finish() {
  if (live.ending) return;
  if (live.pc) {
    // WebRTC: the peer closes, and the server ends its stream at once
    stopSource();
    live.ending = true;
    $("live-status").textContent = "stopped";
    $("live-start").disabled = false;
    return;
  }
  if (live.flush) live.flush();
  stopSource();
  live.ending = true;
  if (live.socket.readyState === WebSocket.OPEN) live.socket.send(JSON.stringify({ end: true }));
  $("live-status").textContent = "finishing: the last half second";
}

function sendSamples(session, samples) {
  if (session.ending || session.failed) return; // the end was asked for: audio after it is dropped
  if (session.socket.readyState === WebSocket.OPEN) session.socket.send(samples);
}

function playFile(samples) {
  const mine = live;
  mine.t0 = performance.now();
  let sent = 0;
  mine.timer = setInterval(() => {
    // a sample is sent once it would have been spoken, a whole chunk at a time (the last may be short)
    const spoken = Math.min(samples.length, Math.floor(((performance.now() - mine.t0) * SAMPLE_RATE) / 1000));
    const due = spoken === samples.length ? spoken : spoken - ((spoken - sent) % mine.chunk);
    if (due > sent) {
      sendSamples(mine, samples.slice(sent, due));
      sent = due;
    }
    if (sent >= samples.length) finish();
  }, 10);
}

async function startMicrophone() {
  const mine = live;
  let pending = [];
  let count = 0;
  const flush = () => {
    if (count) sendSamples(mine, concat(pending));
    pending = [];
    count = 0;
  };
  mine.t0 = performance.now();
  const stop = await microphone((block) => {
    if (mine.ending || mine.failed) return;
    pending.push(block);
    count += block.length;
    if (count >= mine.chunk) flush();
  });
  if (mine.ending || mine.failed || mine !== live) {
    stop(); // stopped while the microphone was opening
    return;
  }
  mine.stopSource = stop;
  mine.flush = flush;
}

function onFrame(index, jpeg) {
  const now = performance.now();
  live.received += 1;
  $("live-frames").textContent = String(live.received);
  // frame i shows the mouth of the audio from i/25 s to (i+1)/25 s: spoken by t0 + (i+1)/25 s
  live.delays.push(now - (live.t0 + ((index + 1) * 1000) / FPS));
  live.frames.set(index, URL.createObjectURL(jpeg));
  if (live.firstArrival === null) startPlayout(now);
  const sorted = [...live.delays].sort((a, b) => a - b);
  const p50 = sorted[Math.floor(sorted.length / 2)];
  $("live-delay").textContent = `${Math.round(p50)} ms (median of ${sorted.length} frames)`;
}

function startPlayout(now) {
  live.firstArrival = now + JITTER_MS;
  const wait = JITTER_MS / 1000;
  if (live.fileBuffer) {
    // the file's audio, delayed as the frames are: the frames follow its clock
    const source = audioContext.createBufferSource();
    source.buffer = live.fileBuffer;
    source.connect(audioContext.destination);
    const at = audioContext.currentTime + wait;
    source.start(at);
    live.audio = source;
    live.clock = () => audioContext.currentTime - at;
  } else {
    live.clock = () => (performance.now() - live.firstArrival) / 1000;
  }
  live.playout = setInterval(showDue, 10);
}

function showDue() {
  const due = Math.floor(live.clock() * FPS);
  let best = -1;
  for (const index of live.frames.keys()) if (index <= due && index > best) best = index;
  if (best > live.shown) {
    const img = $("live-frame");
    img.src = live.frames.get(best);
    img.dataset.index = String(best);
    for (const index of [...live.frames.keys()]) {
      if (index < best) {
        URL.revokeObjectURL(live.frames.get(index));
        live.frames.delete(index);
      }
    }
    live.shown = best;
  }
  if (live.ended && live.frames.size <= 1 && live.shown >= live.lastIndex) {
    clearInterval(live.playout);
    $("live-status").textContent = `ended: ${live.received} frames`;
    $("live-start").disabled = false;
  }
}

function onLiveMessage(message) {
  if (typeof message.data !== "string") {
    const index = new DataView(message.data, 0, 4).getUint32(0, true);
    onFrame(index, new Blob([message.data.slice(4)], { type: "image/jpeg" }));
    return;
  }
  const m = JSON.parse(message.data);
  if (m.type === "started") {
    $("live-status").textContent = `streaming to ${m.avatar}`;
    $("live-stop").disabled = false;
    const start = live.fileBuffer ? Promise.resolve(playFile(mono(live.fileBuffer))) : startMicrophone();
    start.catch((error) => liveError(error.message));
  } else if (m.type === "ended") {
    live.ended = true;
    live.lastIndex = m.frames - 1;
    $("live-serving").textContent = m.serving_ms_p50 === null ? "–" : `${Math.round(m.serving_ms_p50)} ms (median)`;
    if (!m.frames) {
      $("live-status").textContent = "ended: 0 frames (too little audio for a frame)";
      $("live-start").disabled = false;
    }
  } else if (m.type === "error") {
    liveError(m.message);
  }
}

$("live-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  say($("live-error"), "");
  if (live && live.playout) clearInterval(live.playout);
  if (live && live.audio) live.audio.stop();
  if (live && live.pc) live.pc.close();
  live = newLive();
  const avatar = $("live-model").value;
  if (!avatar) {
    liveError("no avatar to stream to: add one (synctalk-avatars add) and reload the page");
    return;
  }
  $("live-frames").textContent = "0";
  $("live-delay").textContent = "–";
  $("live-serving").textContent = "–";
  $("live-speaking").textContent = "–";
  $("live-start").disabled = true;
  try {
    const ctx = await context(); // first, within the click's user activation
    if ($("live-source-file").checked) {
      const file = $("live-file").files[0];
      if (!file) throw new Error("choose an audio file to play as the live source");
      try {
        live.fileBuffer = await ctx.decodeAudioData(await file.arrayBuffer());
      } catch (error) {
        throw new Error(`${file.name}: not a readable audio file`);
      }
    }
    await warmUp(avatar, $("live-status"));
  } catch (error) {
    liveError(error.message);
    return;
  }
  $("live-status").textContent = "connecting…";
  const webrtc = $("live-transport").value === "webrtc" || live.text; // text is said over WebRTC
  $("live-video").hidden = !webrtc;
  $("live-frame").hidden = webrtc;
  if (webrtc) {
    const mine = live;
    startWebRTC(mine, avatar).catch((error) => mine === live && liveError(error.message));
    return;
  }
  const socket = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/api/live`);
  socket.binaryType = "arraybuffer";
  live.socket = socket;
  const mine = live;
  socket.onopen = () => socket.send(JSON.stringify({ avatar }));
  socket.onmessage = (message) => mine === live && onLiveMessage(message);
  socket.onclose = () => {
    if (mine === live && !live.ended) liveError("the connection to the page's server closed");
  };
});

$("live-stop").addEventListener("click", () => live && finish());

loadModels();
