// The meeting page: reads its URL, hides the launch token, connects through voice-client.js and
// shows what happens, large enough to read on a meeting tile. The data-* attributes on <body>
// are described in index.html.

import { STATE_WORDS, shownState, WAITING_LINES } from "./page-state.js";
import { connectVoice } from "./voice-client.js";

const MAX_TRANSCRIPT_LINES = 8;
const MAX_STATE_HISTORY = 200; // a meeting is long; tests and the console need only the recent
const TOOL_DONE_SHOWN_MS = 6000;
const LONG_WORD = 11; // characters; a longer state word is set smaller to stay on one line
// Routing sent this session to openai because livekit failed (for this session or lately).
const BACKUP_REASONS = new Set(["fallback", "breaker_open"]);
const HTTPS_EXEMPT_HOSTS = new Set(["localhost", "127.0.0.1", "[::1]"]);

const $ = (id) => document.getElementById(id);

/** Read ?session=, ?mode=, ?launch= and ?gateway=, and take the launch token out of the
 * visible URL. */
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
    gateway: params.get("gateway") || undefined,
  };
}

/**
 * The gateway's origin: the page's own, or one the page is configured for (<meta
 * name="voice-gateway">). `?gateway=` only picks among those: a page that sent the meeting's
 * microphone to any origin a link names would be a wiretap for whoever writes the link.
 * Throws an Error whose message a person can read.
 */
function resolveGateway(requested) {
  const meta = document.querySelector('meta[name="voice-gateway"]')?.content ?? "";
  const configured = meta.split(/\s+/).filter(Boolean).map((text) => originOf(text, "the page"));
  const allowed = configured.length > 0 ? configured : [location.origin];
  if (requested === undefined) return allowed[0];
  const origin = originOf(requested, "the link");
  if (!allowed.includes(origin)) {
    throw new Error(`This page is not set up for the gateway ${origin}`);
  }
  return origin;
}

function originOf(text, where) {
  let url;
  try {
    url = new URL(text);
  } catch {
    throw new Error(`The gateway ${where} names is not a URL`);
  }
  if (!["https:", "http:"].includes(url.protocol)) {
    throw new Error(`The gateway ${where} names is not an http(s) URL`);
  }
  if (url.protocol === "http:" && !HTTPS_EXEMPT_HOSTS.has(url.hostname)) {
    throw new Error(`The gateway ${where} names must use https`);
  }
  return url.origin;
}

// -- what the page shows -------------------------------------------------------------------

const transcript = [];
const stateHistory = []; // data-state, as shown
const agentStates = []; // the agent's own state messages
const now = {
  status: { phase: "starting" },
  agentState: "initializing",
  agentAudible: false,
  meetingSpeaking: false,
};
let toolPhrases = {};
let toolTimer = null;
let lastTurnMs = null;

function remember(history, value) {
  if (history.at(-1) !== value) history.push(value);
  if (history.length > MAX_STATE_HISTORY) history.shift();
}

function render() {
  const { status } = now;
  const state = shownState({ phase: status.phase, ...now });
  const body = document.body;
  body.dataset.state = state;
  body.dataset.agentState = now.agentState;
  remember(stateHistory, state);
  $("agent-state").textContent = STATE_WORDS[state];
  $("agent-state").classList.toggle("long", STATE_WORDS[state].length > LONG_WORD);
  const problem = status.problem ?? WAITING_LINES[state] ?? null;
  const retry = status.retryInS ? `retrying in ${status.retryInS} s` : null;
  $("problem").textContent = [problem, retry].filter(Boolean).join(" · ");
  $("problem").hidden = !problem;
}

function showAgentState(state) {
  now.agentState = state;
  remember(agentStates, state);
  render();
}

function showActivity({ agentAudible, meetingSpeaking }) {
  Object.assign(now, { agentAudible, meetingSpeaking });
  render();
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
  const phrases = toolPhrases[message.name] ?? {
    doing: "Working on it",
    done: "Done",
    failed: "That did not work",
  };
  clearTimeout(toolTimer);
  tool.hidden = false;
  tool.dataset.status = message.type === "tool.started" ? "running" : message.status;
  if (message.type === "tool.started") {
    tool.textContent = `${phrases.doing}…`;
  } else {
    tool.textContent = message.status === "ok" ? phrases.done : phrases.failed;
    toolTimer = setTimeout(() => {
      tool.hidden = true;
    }, TOOL_DONE_SHOWN_MS);
  }
  // The raw name and timing are for whoever debugs, in the small status line.
  now.lastTool =
    message.type === "tool.started"
      ? `${message.name} running`
      : `${message.name} ${message.status} (${Math.round(message.duration_ms)} ms)`;
  showStatus(now.status);
}

function showStatus(status) {
  now.status = status;
  const body = document.body;
  body.dataset.mode = status.mode ?? "";
  body.dataset.phase = status.phase;
  body.dataset.fallbackReason = status.fallbackReason ?? "";
  const backup = Boolean(status.fallbackReason) || BACKUP_REASONS.has(status.reason);
  const badge = $("mode-badge");
  badge.classList.toggle("backup", backup);
  badge.hidden = !status.mode;
  badge.textContent = backup ? "Backup voice service" : `${status.mode} mode`;
  const parts = [];
  parts.push(status.mode ? `mode ${status.mode}` : "mode not chosen yet");
  if (status.reason) parts.push(`reason: ${status.reason}`);
  if (status.fallbackReason) parts.push(`fell back from livekit: ${status.fallbackReason}`);
  parts.push(status.detail ? `${status.phase}: ${status.detail}` : status.phase);
  if (now.lastTool) parts.push(`tool ${now.lastTool}`);
  if (lastTurnMs !== null) parts.push(`last turn ${lastTurnMs} ms`);
  $("status-line").textContent = parts.join(" · ");
  const error = $("error-line");
  const blocked = status.audioBlocked
    ? "The browser is holding the audio back: click the page to start it."
    : null;
  const text = [blocked, status.error].filter(Boolean).join(" · ");
  error.hidden = !text;
  error.textContent = text ?? "";
  render();
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

async function loadToolPhrases() {
  try {
    const response = await fetch(new URL("./schemas/tool-activity.json", import.meta.url));
    if (response.ok) toolPhrases = await response.json();
  } catch {
    // Generic phrases then; the tool still shows.
  }
}

function start() {
  const { gateway: requested, ...launch } = readLaunchParameters();
  let gateway;
  try {
    gateway = resolveGateway(requested);
  } catch (err) {
    showStatus({ phase: "stopped", problem: err.message, error: "not connecting" });
    window.voicePage = { voice: null, stateHistory, agentStates, transcript };
    return;
  }
  loadToolPhrases();
  const voice = connectVoice({ gateway, ...launch });
  voice.on("status", showStatus);
  voice.on("activity", showActivity);
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
  window.voicePage = { voice, stateHistory, agentStates, transcript };
}

start();
