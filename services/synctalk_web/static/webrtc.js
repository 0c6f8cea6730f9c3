"use strict";
// The Live tab over WebRTC: the microphone (or a file played as one) is the offer's audio track;
// the answer brings the avatar's video (H.264, encoded on the Triton server) and its voice (Opus),
// in one MediaStream, so the browser plays them in sync. Signalling: POST /offer (the WebRTC
// service the page's server mounts, synctalk_webrtc). Shown from getStats() each second: the
// frame rate, the bitrate, the audio/video offset (audio minus video estimatedPlayoutTimestamp)
// and the delay behind the voice (a shown frame's display time against when its speech started
// to play into the offer's track).

function iceGathered(pc) {
  // aiortc takes a complete offer (no trickle): wait for the candidates, at most 3 s
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => pc.iceGatheringState === "complete" && resolve();
    pc.addEventListener("icegatheringstatechange", done);
    setTimeout(resolve, 3000);
  });
}

async function speechTrack(fileBuffer) {
  if (fileBuffer) {
    const ctx = await context();
    const node = ctx.createBufferSource();
    node.buffer = fileBuffer;
    const out = ctx.createMediaStreamDestination();
    node.connect(out);
    let started = false;
    const start = () => {
      started = true;
      node.start();
    };
    return { stream: out.stream, start, stop: () => started && node.stop() }; // stop() before start() throws
  }
  const stream = await navigator.mediaDevices.getUserMedia({
    audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false, channelCount: 1 },
  });
  return { stream, start: () => {}, stop: () => stream.getTracks().forEach((t) => t.stop()) };
}

async function startWebRTC(session, avatar) {
  session.avatar = avatar;
  const config = await api("/webrtc/config");
  const pc = new RTCPeerConnection({ iceServers: config.iceServers });
  session.pc = pc;
  // the speech: the microphone, a file played as one, or none (text the server's TTS says)
  const speech = session.text ? { stream: null, start: () => {}, stop: () => {} } : await speechTrack(session.fileBuffer);
  session.stopSource = () => {
    speech.stop();
    setControls(false);
    pc.close();
  };
  if (speech.stream) speech.stream.getAudioTracks().forEach((track) => pc.addTrack(track, speech.stream));
  else pc.addTransceiver("audio", { direction: "recvonly" }); // the voice only
  // the control channel: speaking events in; interrupt and say out
  session.control = pc.createDataChannel("control");
  session.speaking = [];
  session.control.addEventListener("open", () => session === live && setControls(true));
  session.control.addEventListener("message", (message) => session === live && onControl(session, JSON.parse(message.data)));
  const video = pc.addTransceiver("video", { direction: "recvonly" });
  const h264 = RTCRtpReceiver.getCapabilities("video").codecs.filter((c) => c.mimeType === "video/H264");
  if (h264.length) video.setCodecPreferences(h264);
  const remote = new MediaStream();
  const element = $("live-video");
  element.muted = !session.fileBuffer && !session.text; // the microphone's own voice is not played back to it
  pc.addEventListener("track", (event) => {
    remote.addTrack(event.track);
    element.srcObject = remote;
    if (window.SYNCTALK_PROBE && event.track.kind === "audio") probeVoice(session, remote);
  });
  // a dropout (the network went away: a tunnel, a change of network): no frame for a second
  // (showStats), or "disconnected" (Chromium says so after some seconds), until the packets flow
  // again, and the same session goes on (the server keeps the peer through its --viewer-timeout of
  // silence, 15 s by default); past that "failed", and the page says the session ended
  session.dropouts = 0;
  session.connected = false;
  pc.addEventListener("connectionstatechange", () => {
    if (session !== live) return;
    document.body.dataset.liveConnection = pc.connectionState;
    if (pc.connectionState === "connected" && !session.connected) {
      session.connected = true;
      session.t0 = performance.now();
      speech.start();
      $("live-status").textContent = `streaming to ${avatar} over WebRTC`;
      $("live-stop").disabled = false;
    } else if (pc.connectionState === "disconnected") {
      dropped(session);
    } else if (pc.connectionState === "failed") {
      liveError(
        session.dropouts
          ? "the connection dropped and did not come back: the session has ended (Start again)"
          : "the WebRTC connection failed (a TURN server is needed across NATs: see the README)",
      );
    }
  });
  await pc.setLocalDescription(await pc.createOffer());
  await iceGathered(pc);
  const answer = await api("/offer", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ sdp: pc.localDescription.sdp, type: pc.localDescription.type, avatar }),
  });
  await pc.setRemoteDescription(answer);
  watchFrames(session, element);
  session.statsTimer = setInterval(() => showStats(session), 1000);
}

function dropped(session) {
  if (session.stalled) return;
  session.stalled = true;
  session.dropouts += 1;
  document.body.dataset.liveDropouts = String(session.dropouts);
  $("live-status").textContent = "the connection dropped: waiting for the network to come back";
}

function setControls(on) {
  $("live-text").disabled = !on;
  $("live-say").disabled = !on;
  $("live-interrupt").disabled = !on;
}

function onControl(session, message) {
  // {"type": "speaking", "speaking": bool, "t": s} as the voice is heard; answers to say/interrupt
  if (message.type === "speaking") {
    session.speaking.push({ speaking: message.speaking, t: message.t, at: performance.now() });
    document.body.dataset.speaking = JSON.stringify(session.speaking);
    $("live-speaking").textContent = message.speaking ? "speaking" : "listening";
  } else if (message.type === "interrupted") {
    session.interrupted = message;
    $("live-speaking").textContent = "interrupted";
  } else if (message.type === "error") {
    say($("live-error"), message.error);
  }
}

function control(message) {
  if (live && live.control && live.control.readyState === "open") live.control.send(JSON.stringify(message));
}

$("live-say-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = $("live-text").value.trim();
  if (!text) return;
  control({ type: "say", text });
  $("live-text").value = "";
});
$("live-interrupt").addEventListener("click", () => control({ type: "interrupt" }));

// What is heard and what is shown, from the content (set window.SYNCTALK_PROBE = {x, y, w, h},
// a region of the avatar's frames, before Start): session.heard, the voice's peak level every ~5 ms
// (performance.now(), peak), from the received track through Web Audio; session.shown, each frame
// as displayed (expectedDisplayTime, its index from the RTP timestamp, the region's mean RGB).
function probeVoice(session, stream) {
  const ctx = new AudioContext();
  const analyser = ctx.createAnalyser();
  analyser.fftSize = 256;
  ctx.createMediaStreamSource(stream).connect(analyser);
  const block = new Float32Array(analyser.fftSize);
  session.heard = [];
  const timer = setInterval(() => {
    if (session !== live || session.failed) return clearInterval(timer);
    analyser.getFloatTimeDomainData(block);
    let peak = 0;
    for (const x of block) peak = Math.max(peak, Math.abs(x));
    session.heard.push([performance.now(), peak]);
  }, 5);
}

function probeFrame(session, element, meta, index) {
  const region = window.SYNCTALK_PROBE;
  if (!session.probeCanvas) {
    session.probeCanvas = document.createElement("canvas");
    session.probeCanvas.width = session.probeCanvas.height = 8;
    session.shown = [];
  }
  const context2d = session.probeCanvas.getContext("2d", { willReadFrequently: true });
  context2d.drawImage(element, region.x, region.y, region.w, region.h, 0, 0, 8, 8);
  const data = context2d.getImageData(0, 0, 8, 8).data;
  const mean = [0, 0, 0];
  for (let i = 0; i < data.length; i += 4) for (let c = 0; c < 3; c++) mean[c] += data[i + c] / 64;
  session.shown.push([meta.expectedDisplayTime, index, mean]);
}

function watchFrames(session, element) {
  // each shown frame: its RTP timestamp says which frame it is (3600 ticks of 90 kHz a frame)
  if (!element.requestVideoFrameCallback) return;
  const onFrame = (now, meta) => {
    if (session !== live || session.failed) return;
    if (window.SYNCTALK_PROBE && meta.rtpTimestamp !== undefined && session.firstRtp !== undefined) {
      probeFrame(session, element, meta, Math.round(((meta.rtpTimestamp - session.firstRtp) >>> 0) / 3600));
    }
    if (meta.rtpTimestamp !== undefined && session.t0) {
      if (session.firstRtp === undefined) session.firstRtp = meta.rtpTimestamp;
      const index = Math.round(((meta.rtpTimestamp - session.firstRtp) >>> 0) / 3600);
      session.delays.push(meta.expectedDisplayTime - (session.t0 + ((index + 1) * 1000) / FPS));
      if (session.delays.length > 250) session.delays.shift();
    }
    element.requestVideoFrameCallback(onFrame);
  };
  element.requestVideoFrameCallback(onFrame);
}

async function showStats(session) {
  if (!session.pc || session !== live) return;
  const report = await session.pc.getStats();
  const inbound = {};
  report.forEach((s) => {
    if (s.type === "inbound-rtp") inbound[s.kind] = s;
  });
  const v = inbound.video;
  const a = inbound.audio;
  if (!v) return;
  // no frame decoded for a second while connected: a dropout; frames again: back, the same session
  if (session.connected && session.lastDecoded !== undefined) {
    if (v.framesDecoded === session.lastDecoded) dropped(session);
    else if (session.stalled && session.pc.connectionState === "connected") {
      session.stalled = false;
      $("live-status").textContent = `streaming to ${session.avatar} over WebRTC (back after a dropout)`;
    }
  }
  session.lastDecoded = v.framesDecoded;
  const now = performance.now();
  const bits = session.lastBytes === undefined ? null : ((v.bytesReceived - session.lastBytes) * 8) / ((now - session.lastAt) / 1000);
  session.lastBytes = v.bytesReceived;
  session.lastAt = now;
  const sorted = [...session.delays].sort((x, y) => x - y);
  const stats = {
    atS: session.t0 ? (now - session.t0) / 1000 : null, // since the speech started
    delayMs: sorted.length ? sorted[Math.floor(sorted.length / 2)] : null, // the last 250 frames' median
    framesDecoded: v.framesDecoded || 0,
    fps: v.framesPerSecond || 0,
    kbps: bits === null ? null : bits / 1000,
    offsetMs: a && a.estimatedPlayoutTimestamp && v.estimatedPlayoutTimestamp ? a.estimatedPlayoutTimestamp - v.estimatedPlayoutTimestamp : null,
    // each track's jitter buffer (the receiver's own delay) and the voice the receiver made up
    audioBufferMs: a && a.jitterBufferEmittedCount ? (1000 * a.jitterBufferDelay) / a.jitterBufferEmittedCount : null,
    videoBufferMs: v.jitterBufferEmittedCount ? (1000 * v.jitterBufferDelay) / v.jitterBufferEmittedCount : null,
    concealedMs: a ? (1000 * (a.concealedSamples || 0)) / (a.clockRate || 48000) : null,
  };
  session.stats.push(stats);
  $("live-frames").textContent = String(stats.framesDecoded);
  $("live-fps").textContent = `${stats.fps.toFixed(1)} frames/s`;
  if (stats.kbps !== null) $("live-bitrate").textContent = `${Math.round(stats.kbps)} kbit/s`;
  if (stats.offsetMs !== null) $("live-offset").textContent = `${Math.round(stats.offsetMs)} ms`;
  if (stats.delayMs !== null) {
    $("live-delay").textContent = `${Math.round(stats.delayMs)} ms (median of ${sorted.length} frames)`;
  }
  document.body.dataset.liveStats = JSON.stringify(session.stats);
}
