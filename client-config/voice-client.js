// voice-client.js: one API for both modes of the meeting voice agent.
//
//   import { connectVoice } from "/static/voice-client.js";
//   const voice = connectVoice({ gateway: location.origin, session, mode, launch });
//   voice.on("message", (m) => ...);   // every shared state message (agent.state, transcript.*,
//                                      // tool.*, metrics.turn, voice.error); also by type:
//   voice.on("agent.state", (m) => ...);
//   voice.on("status", (s) => ...);    // { phase, mode, reason, fallbackReason, detail, problem,
//                                      //   error, attempt, retryInS, audioBlocked }
//   voice.on("activity", (a) => ...);  // { agentAudible, meetingSpeaking }: what the room hears
//   voice.levels();                    // { input, output } RMS for a level meter
//   voice.disconnect();
//
// `phase` is one of: starting, connecting, waiting (livekit: in the room, no agent yet),
// connected, fallback (switching to openai), reconnecting (the connection ended; a new one
// follows), unreachable (the gateway did not answer, or answered 5xx/408/429), no-microphone,
// stopped (given up: see `problem`), disconnected. `problem` is a sentence for people, `error`
// the technical detail.
//
// The gateway decides the mode (`GET /v1/session`). In livekit mode the page falls back to
// openai when LiveKit does not connect, no agent joins in time, or the room drops for good: it
// reports why (`POST /v1/session/fallback`) and carries on with the openai session it gets back.
// Failures that a retry can cure (the network, 5xx, 408, 429, a dropped connection, a missing
// microphone) are retried with capped exponential backoff until they have lasted
// `giveUpAfterMs`; a 4xx answer cannot succeed on retry and stops the page at once.

import { AudioEngine } from "./voice-audio.js";
import { runLiveKit } from "./voice-livekit.js";
import { runOpenAI } from "./voice-openai.js";

export { CONTRACT_VERSION, STATE_MESSAGE_TYPES } from "./voice-messages.js";

export const MODES = ["livekit", "openai"];

const DEFAULTS = {
  agentTimeoutMs: 8000,
  backoffBaseMs: 500,
  backoffMaxMs: 30000,
  // Failures in a row for this long: the page stops retrying and says why.
  giveUpAfterMs: 3 * 60 * 1000,
  // A connection that stayed up this long starts the retry budget afresh.
  stableAfterMs: 10000,
};

/**
 * Connect the page to the voice agent and keep it connected.
 * @param {{ gateway: string, session?: string, mode?: string, launch?: string,
 *           agentTimeoutMs?: number, log?: (line: string) => void }} options
 */
export function connectVoice(options) {
  const voice = new VoiceConnection(options);
  voice.start();
  return voice;
}

export class GatewayError extends Error {
  /** `status` 0: no HTTP answer (the network, or CORS refused to show one). */
  constructor(status, code, message, { retryable, retryAfterMs } = {}) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryable = retryable ?? (status === 0 || status >= 500 || [408, 429].includes(status));
    this.retryAfterMs = retryAfterMs ?? 0; // a 429's Retry-After: never ask again sooner
  }
}

// What a person is told when the gateway refuses for good, by the gateway's error code.
const REFUSALS = {
  invalid_launch: "This meeting link is not valid: it has expired or was changed",
  launch_required: "This page needs the meeting link the gateway issued",
  wrong_session: "This meeting link belongs to another session",
  invalid_mode: "The link asks for a voice mode that does not exist",
  invalid_session_id: "The link's session id is not valid",
  invalid_user: "The link's user is not valid",
};

class VoiceConnection {
  constructor({ gateway, session, mode, launch, log, ...rest }) {
    if (!gateway) throw new TypeError("connectVoice needs the gateway's URL");
    this.gateway = new URL(gateway).origin;
    this.sessionId = session || null;
    // People type `LiveKit`; the gateway folds case too, the page sends what it means.
    this.requestedMode = mode ? mode.trim().toLowerCase() : null;
    this.launch = launch || null; // kept in memory only: never in the URL, storage or logs
    this.options = { ...DEFAULTS, ...rest };
    this.listeners = new Map();
    this.abort = new AbortController();
    this.connectedAt = null;
    this.stableRun = false; // a connection of this attempt lasted stableAfterMs
    this.audio = new AudioEngine({
      log: (line) => this.log(line),
      onBlocked: (blocked) => this.setStatus({ audioBlocked: blocked }),
      onActivity: (activity) => this.dispatch("activity", activity),
    });
    this.logLine = log ?? ((line) => console.info(`[voice] ${line}`));
    this.state = {
      phase: "starting",
      mode: null,
      reason: null,
      fallbackReason: null,
      detail: null,
      problem: null,
      error: null,
      attempt: 0,
      retryInS: null, // the page tries again in this many seconds
      audioBlocked: false, // the browser holds audio until someone clicks the page
    };
  }

  // -- public API --------------------------------------------------------------------------

  /** Subscribe to "message", a state message type, "status" or "activity". Returns an
   * unsubscribe. */
  on(type, listener) {
    if (!this.listeners.has(type)) this.listeners.set(type, new Set());
    this.listeners.get(type).add(listener);
    return () => this.listeners.get(type)?.delete(listener);
  }

  /** The current status (the last "status" event). */
  get status() {
    return { ...this.state };
  }

  /** What the room hears now (the last "activity" event). */
  get activity() {
    return { ...this.audio.activity };
  }

  levels() {
    return this.audio.levels();
  }

  stats() {
    return { ...this.audio.stats(), playing: this.audio.playerPlaying };
  }

  /** Leave the room or close the relay, release the microphone, stop retrying. */
  async disconnect() {
    if (this.abort.signal.aborted) return;
    this.abort.abort();
    this.setStatus({ phase: "disconnected", detail: null, problem: null, error: null });
    await this.audio.close();
  }

  // -- the connection loop -----------------------------------------------------------------

  start() {
    this.loop().catch((err) => {
      // Not expected: every step handles its own failures. Say so rather than die silently.
      this.stop({ problem: "The page stopped working", error: describe(err) });
    });
  }

  async loop() {
    const signal = this.abort.signal;
    if (this.requestedMode && !MODES.includes(this.requestedMode)) {
      this.stop({
        problem: REFUSALS.invalid_mode,
        error: `mode must be one of: ${MODES.join(", ")}`,
      });
      return;
    }
    const budget = new RetryBudget(this.options);
    // After a fallback the page stays on openai; a fallback the gateway has not heard of yet
    // is reported before anything else.
    const attempt = { stickyOpenAI: false, unreported: null };
    while (!signal.aborted) {
      this.stableRun = false;
      let failure;
      try {
        failure = await this.run(attempt);
      } catch (err) {
        failure = gatewayFailure(err);
      }
      if (signal.aborted || !failure) return;
      if (this.heldStable()) budget.reset();
      if (!failure.retryable) {
        this.stop(failure);
        return;
      }
      let wait = budget.next();
      if (wait !== null) wait = Math.max(wait, failure.retryAfterMs ?? 0);
      if (wait === null) {
        const minutes = Math.round(this.options.giveUpAfterMs / 6000) / 10;
        this.stop({ ...failure, problem: `${failure.problem}; gave up after ${minutes} min` });
        return;
      }
      this.log(`${failure.error}; retrying in ${Math.round(wait)} ms`);
      this.emit({ type: "agent.state", state: "initializing" });
      this.setStatus({
        phase: failure.phase,
        problem: failure.problem,
        error: failure.error,
        detail: `retrying in ${Math.round(wait / 100) / 10} s (attempt ${budget.attempts})`,
        attempt: budget.attempts,
        retryInS: Math.max(1, Math.round(wait / 1000)),
      });
      await sleep(wait, signal);
    }
  }

  /**
   * One attempt: a session from the gateway, livekit (and its fallback), then openai until the
   * relay closes. Resolves with why it ended (a failure), or null once disconnected; a
   * gateway refusal rejects with its GatewayError.
   */
  async run(attempt) {
    const signal = this.abort.signal;
    let config;
    if (attempt.unreported) {
      this.setStatus({ phase: "fallback", detail: "reporting the fallback" });
      config = await this.reportFallback(attempt.unreported);
      attempt.unreported = null;
    } else {
      this.setStatus({ phase: "connecting", detail: "asking the gateway for a session" });
      config = await this.fetchSession(attempt.stickyOpenAI ? "openai" : this.requestedMode);
    }
    if (signal.aborted) return null;
    this.sessionId = config.session_id;
    if (config.mode === "livekit") {
      this.setStatus({ mode: "livekit", reason: config.reason, detail: "joining the room" });
      this.emit({ type: "agent.state", state: "initializing" });
      const ended = await runLiveKit({
        config,
        audio: this.audio,
        emit: (m) => this.emit(m),
        status: (s) => this.setStatus(s),
        signal,
        log: (line) => this.log(line),
        agentTimeoutMs: this.options.agentTimeoutMs,
      });
      if (signal.aborted) return null;
      // The microphone is the page's, not LiveKit's: no fallback (it would blame LiveKit).
      if (ended.microphone) return microphoneFailure(ended.microphone);
      const { fallback } = ended;
      // The page itself left the room (a reload or close under way): nothing to fall back from.
      if (!fallback) return null;
      this.log(`falling back to openai: ${fallback.code}: ${fallback.detail}`);
      this.setStatus({
        phase: "fallback",
        fallbackReason: fallback.code,
        detail: fallback.detail,
        problem: null,
      });
      attempt.stickyOpenAI = true;
      attempt.unreported = fallback; // reported first on the next attempt if this fails
      config = await this.reportFallback(fallback);
      attempt.unreported = null;
      if (signal.aborted) return null;
    }
    this.setStatus({
      phase: "connecting",
      mode: "openai",
      reason: config.reason,
      detail: "opening the relay",
    });
    this.emit({ type: "agent.state", state: "initializing" });
    const ended = await runOpenAI({
      gateway: this.gateway,
      config,
      audio: this.audio,
      emit: (m) => this.emit(m),
      status: (s) => this.setStatus(s),
      signal,
      log: (line) => this.log(line),
    });
    if (signal.aborted) return null;
    if (ended.microphone) return microphoneFailure(ended.microphone);
    return {
      phase: "reconnecting",
      retryable: true,
      problem: "Lost the connection to the voice service",
      error: `the relay connection ended: ${ended.reason}`,
    };
  }

  stop({ problem, error }) {
    this.log(`stopped: ${problem} (${error})`);
    this.emit({ type: "agent.state", state: "initializing" });
    this.setStatus({
      phase: "stopped",
      problem,
      error,
      detail: "not retrying: reload the page to try again",
    });
  }

  // -- the gateway -------------------------------------------------------------------------

  async fetchSession(mode) {
    const url = new URL("/v1/session", this.gateway);
    if (this.sessionId) url.searchParams.set("session_id", this.sessionId);
    if (mode) url.searchParams.set("mode", mode);
    if (this.launch) url.searchParams.set("launch", this.launch);
    return this.request(url, { method: "GET" });
  }

  async reportFallback({ code, detail }) {
    const headers = { "Content-Type": "application/json" };
    if (this.launch) headers.Authorization = `Bearer ${this.launch}`;
    const reason = `${code}: ${detail}`.slice(0, 200);
    const config = await this.request(new URL("/v1/session/fallback", this.gateway), {
      method: "POST",
      headers,
      body: JSON.stringify({ session_id: this.sessionId, reason }),
    });
    if (config.mode !== "openai" || !config.relay) {
      throw new GatewayError(200, "bad_fallback", "the gateway's fallback session is not openai", {
        retryable: false,
      });
    }
    return config;
  }

  async request(url, init) {
    let response;
    try {
      response = await fetch(url, { ...init, cache: "no-store", signal: this.abort.signal });
    } catch (err) {
      if (this.abort.signal.aborted) throw err;
      // A refused connection, DNS, TLS, or a CORS refusal: the browser tells them apart to
      // nobody, so the message names them all.
      throw new GatewayError(0, "unreachable", `no answer from ${url.origin} (${describe(err)})`);
    }
    let body = null;
    try {
      body = await response.json();
    } catch {
      // A proxy's HTML error page, say: the status alone is all we can tell.
    }
    if (!response.ok) {
      const code = body?.error?.code ?? "http_error";
      const message = body?.error?.message ?? response.statusText;
      const retryAfterMs = 1000 * (Number(response.headers.get("Retry-After")) || 0);
      throw new GatewayError(response.status, code, `${response.status} ${code}: ${message}`, {
        retryAfterMs,
      });
    }
    if (!body || body.contract_version !== 1) {
      throw new GatewayError(response.status, "bad_session", "unexpected session config", {
        retryable: false,
      });
    }
    return body;
  }

  // -- events ------------------------------------------------------------------------------

  emit(message) {
    if (message.type === "voice.error") {
      const text = `${message.message} (${message.code})`;
      this.setStatus({ error: message.fatal ? `${text}; reconnecting` : text });
    }
    this.dispatch(message.type, message);
    this.dispatch("message", message);
  }

  setStatus(changes) {
    if ("phase" in changes) {
      this.notePhase(changes.phase);
      changes.retryInS ??= null; // a wait belongs to the phase that announced it
    }
    if (changes.phase === "connected") Object.assign(changes, { problem: null, error: null });
    Object.assign(this.state, changes);
    this.dispatch("status", this.status);
  }

  /** Whether this attempt held a connection for stableAfterMs (then retries start afresh). */
  heldStable() {
    this.notePhase(null);
    return this.stableRun;
  }

  notePhase(phase) {
    const now = performance.now();
    if (this.connectedAt !== null && now - this.connectedAt >= this.options.stableAfterMs) {
      this.stableRun = true;
    }
    if (phase === "connected") this.connectedAt ??= now;
    else this.connectedAt = null;
  }

  dispatch(type, value) {
    for (const listener of this.listeners.get(type) ?? []) {
      try {
        listener(value);
      } catch (err) {
        console.error("voice listener failed", err);
      }
    }
  }

  log(line) {
    this.logLine(line);
  }
}

/** Capped exponential backoff with equal jitter, for failures in a row; null once they have
 * lasted `giveUpAfterMs`. */
class RetryBudget {
  constructor({ backoffBaseMs, backoffMaxMs, giveUpAfterMs }) {
    Object.assign(this, { backoffBaseMs, backoffMaxMs, giveUpAfterMs });
    this.reset();
  }

  reset() {
    this.attempts = 0;
    this.since = null;
  }

  next() {
    const now = performance.now();
    this.since ??= now;
    this.attempts += 1;
    const ceiling = Math.min(
      this.backoffMaxMs,
      this.backoffBaseMs * 2 ** Math.min(this.attempts - 1, 16),
    );
    const wait = ceiling / 2 + Math.random() * (ceiling / 2);
    return now + wait - this.since > this.giveUpAfterMs ? null : wait;
  }
}

function gatewayFailure(err) {
  if (!(err instanceof GatewayError)) {
    return { phase: "stopped", retryable: false, problem: "The page failed", error: describe(err) };
  }
  if (!err.retryable) {
    const problem = REFUSALS[err.code] ?? `The gateway refused the session (${err.status})`;
    return { phase: "stopped", retryable: false, problem, error: err.message };
  }
  const problem =
    err.status === 0
      ? "Can't reach the voice service"
      : `The voice service is not available (${err.status})`;
  return {
    phase: "unreachable",
    retryable: true,
    problem,
    error: err.message,
    retryAfterMs: err.retryAfterMs,
  };
}

function microphoneFailure(reason) {
  const error = `microphone: ${reason}`;
  return { phase: "no-microphone", retryable: true, problem: reason, error };
}

function describe(err) {
  return err?.message || String(err);
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    }
    signal.addEventListener("abort", done, { once: true });
  });
}
