// The meeting page: reads its URL, hides the launch token, connects through voice-client.js and
// shows what happens. State is visible as text and as data-* attributes on <body> for machines.

import { connectVoice } from "./voice-client.js";

const STATE_LABELS = {
  initializing: "Starting",
  listening: "Listening",
  thinking: "Thinking",
  speaking: "Speaking",
  idle: "Ready",
};
const MAX_TRANSCRIPT_LINES = 8;
const MAX_STATE_HISTORY = 200; // a meeting is long; tests and the console need only the recent

const $ = (id) => document.getElementById(id);

/** Read ?session=, ?mode= and ?launch=, and take the launch token out of the visible URL. */
function readLaunchParameters() {
  const params = new URLSearchParams(location.search);
  const launch = params.get("launch");
  if (params.has("launch")) {
    params.delete("launch");
    const query = params.toString();
    history.replaceState(history.state, "", `${location.pathname}${query ? `?${query}` : ""}`);
  }
  return {
    session: params.get("session") || undefined,
    mode: params.get("mode") || undefined,
    launch: launch || undefined,
  };
}

const transcript = [];
const stateHistory = [];

function showAgentState(state) {
  document.body.dataset.state = state;
  $("agent-state").textContent = STATE_LABELS[state] ?? state;
  if (stateHistory.at(-1) !== state) stateHistory.push(state);
  if (stateHistory.length > MAX_STATE_HISTORY) stateHistory.shift();
}

function showTranscript(role, message) {
  const last = transcript.findLast((line) => line.role === role);
  if (last && !last.final) {
    last.text = message.text;
    last.final = message.final;
  } else {
    transcript.push({ role, text: message.text, final: message.final });
  }
  while (transcript.length > MAX_TRANSCRIPT_LINES) transcript.shift();
  const items = transcript.map((line) => {
    const item = document.createElement("li");
    item.className = `${line.role}${line.final ? "" : " partial"}`;
    const who = document.createElement("span");
    who.className = "who";
    who.textContent = line.role === "user" ? "Meeting" : "Assistant";
    const text = document.createElement("span");
    text.className = "text";
    text.textContent = line.text;
    item.append(who, text);
    return item;
  });
  $("transcript").replaceChildren(...items);
}

function showTool(message) {
  const tool = $("tool");
  tool.hidden = false;
  if (message.type === "tool.started") {
    tool.textContent = `Running ${message.name}…`;
  } else {
    const outcome = message.status === "ok" ? "done" : "failed";
    tool.textContent = `${message.name} ${outcome} (${Math.round(message.duration_ms)} ms)`;
  }
}

let lastTurnMs = null;

function showStatus(status) {
  const body = document.body;
  body.dataset.mode = status.mode ?? "";
  body.dataset.phase = status.phase;
  body.dataset.fallbackReason = status.fallbackReason ?? "";
  $("mode-badge").textContent = status.mode ? `${status.mode} mode` : "connecting";
  const parts = [];
  parts.push(status.mode ? `mode ${status.mode}` : "mode not chosen yet");
  if (status.reason) parts.push(`reason: ${status.reason}`);
  if (status.fallbackReason) parts.push(`fell back from livekit: ${status.fallbackReason}`);
  parts.push(status.detail ? `${status.phase}: ${status.detail}` : status.phase);
  if (lastTurnMs !== null) parts.push(`last turn ${lastTurnMs} ms`);
  $("status-line").textContent = parts.join(" · ");
  const error = $("error-line");
  const blocked = status.audioBlocked
    ? "The browser is holding the audio back: click the page to start it."
    : null;
  const text = [blocked, status.error].filter(Boolean).join(" · ");
  error.hidden = !text;
  error.textContent = text ?? "";
}

function startMeters(voice) {
  const width = (rms) => {
    const db = 20 * Math.log10(Math.max(rms, 1e-6));
    return `${Math.round(Math.min(1, Math.max(0, (db + 60) / 60)) * 100)}%`;
  };
  setInterval(() => {
    const { input, output } = voice.levels();
    $("meter-input").style.width = width(input);
    $("meter-output").style.width = width(output);
  }, 50);
}

const voice = connectVoice({ gateway: location.origin, ...readLaunchParameters() });
voice.on("status", showStatus);
voice.on("agent.state", (m) => showAgentState(m.state));
voice.on("transcript.user", (m) => showTranscript("user", m));
voice.on("transcript.assistant", (m) => showTranscript("assistant", m));
voice.on("tool.started", showTool);
voice.on("tool.finished", showTool);
voice.on("metrics.turn", (m) => {
  if (m.voice_to_voice_ms != null) lastTurnMs = Math.round(m.voice_to_voice_ms);
  showStatus(voice.status);
});
showStatus(voice.status);
startMeters(voice);
addEventListener("pagehide", () => voice.disconnect());

// For tests and for whoever opens the console in a bot's browser.
window.voicePage = { voice, stateHistory, transcript };
