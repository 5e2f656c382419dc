// voice-client.js: one API for both modes of the meeting voice agent.
//
//   import { connectVoice } from "/static/voice-client.js";
//   const voice = connectVoice({ gateway: location.origin, session, mode, launch });
//   voice.on("message", (m) => ...);   // every shared state message (agent.state, transcript.*,
//                                      // tool.*, metrics.turn, voice.error); also by type:
//   voice.on("agent.state", (m) => ...);
//   voice.on("status", (s) => ...);    // { phase, mode, reason, fallbackReason, detail, error }
//   voice.levels();                    // { input, output } RMS for a level meter
//   voice.disconnect();
//
// The gateway decides the mode (`GET /v1/session`). In livekit mode the page falls back to
// openai when LiveKit does not connect, no agent joins in time, or the room drops for good: it
// reports why (`POST /v1/session/fallback`) and carries on with the openai session it gets back.
// Every gateway call is retried with capped exponential backoff; the page never gives up.

import { AudioEngine } from "./voice-audio.js";
import { runLiveKit } from "./voice-livekit.js";
import { runOpenAI } from "./voice-openai.js";

export { CONTRACT_VERSION, STATE_MESSAGE_TYPES } from "./voice-messages.js";

const DEFAULTS = {
  agentTimeoutMs: 8000,
  backoffBaseMs: 500,
  backoffMaxMs: 30000,
  // A relay connection that stayed up this long resets the backoff.
  stableAfterMs: 10000,
};

/**
 * Connect the page to the voice agent and keep it connected.
 * @param {{ gateway: string, session?: string, mode?: "livekit"|"openai", launch?: string,
 *           agentTimeoutMs?: number, log?: (line: string) => void }} options
 */
export function connectVoice(options) {
  const voice = new VoiceConnection(options);
  voice.start();
  return voice;
}

export class GatewayError extends Error {
  constructor(status, code, message, retryAfterMs = 0) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfterMs = retryAfterMs; // a 429's Retry-After: never ask again sooner
  }
}

class VoiceConnection {
  constructor({ gateway, session, mode, launch, log, ...rest }) {
    if (!gateway) throw new TypeError("connectVoice needs the gateway's URL");
    this.gateway = new URL(gateway).origin;
    this.sessionId = session || null;
    this.requestedMode = mode || null;
    this.launch = launch || null; // kept in memory only: never in the URL, storage or logs
    this.options = { ...DEFAULTS, ...rest };
    this.listeners = new Map();
    this.abort = new AbortController();
    this.audio = new AudioEngine({
      log: (line) => this.log(line),
      onBlocked: (blocked) => this.setStatus({ audioBlocked: blocked }),
    });
    this.logLine = log ?? ((line) => console.info(`[voice] ${line}`));
    this.state = {
      phase: "starting",
      mode: null,
      reason: null,
      fallbackReason: null,
      detail: null,
      error: null,
      attempt: 0,
      audioBlocked: false, // the browser holds audio until someone clicks the page
    };
  }

  // -- public API --------------------------------------------------------------------------

  /** Subscribe to "message", a state message type, or "status". Returns an unsubscribe. */
  on(type, listener) {
    if (!this.listeners.has(type)) this.listeners.set(type, new Set());
    this.listeners.get(type).add(listener);
    return () => this.listeners.get(type)?.delete(listener);
  }

  /** The current status (the last "status" event). */
  get status() {
    return { ...this.state };
  }

  levels() {
    return this.audio.levels();
  }

  stats() {
    return this.audio.stats();
  }

  /** Leave the room or close the relay, release the microphone, stop retrying. */
  async disconnect() {
    if (this.abort.signal.aborted) return;
    this.abort.abort();
    this.setStatus({ phase: "disconnected", detail: null, error: null });
    await this.audio.close();
  }

  // -- the connection loop -----------------------------------------------------------------

  start() {
    this.loop().catch((err) => {
      // Not expected: every step handles its own failures. Say so rather than die silently.
      this.setStatus({ phase: "error", error: `the voice client stopped: ${describe(err)}` });
    });
  }

  async loop() {
    const signal = this.abort.signal;
    let failures = 0;
    let stickyOpenAI = false; // after a fallback the page stays on openai
    while (!signal.aborted) {
      this.setStatus({ phase: "connecting", detail: "asking the gateway for a session" });
      const config = await this.retrying("session", () =>
        this.fetchSession(stickyOpenAI ? "openai" : this.requestedMode),
      );
      if (!config) return; // disconnected while retrying
      this.sessionId = config.session_id;
      let openaiConfig = config;
      if (config.mode === "livekit") {
        this.setStatus({ mode: "livekit", reason: config.reason, detail: "joining the room" });
        this.emit({ type: "agent.state", state: "initializing" });
        const { fallback } = await runLiveKit({
          config,
          audio: this.audio,
          emit: (m) => this.emit(m),
          status: (s) => this.setStatus(s),
          signal,
          log: (line) => this.log(line),
          agentTimeoutMs: this.options.agentTimeoutMs,
        });
        if (!fallback) return;
        this.log(`falling back to openai: ${fallback.code}: ${fallback.detail}`);
        this.setStatus({
          phase: "fallback",
          fallbackReason: fallback.code,
          detail: fallback.detail,
        });
        stickyOpenAI = true;
        openaiConfig = await this.retrying("fallback", () => this.reportFallback(fallback));
        if (!openaiConfig) return;
      }
      const started = performance.now();
      this.setStatus({
        phase: "connecting",
        mode: "openai",
        reason: openaiConfig.reason,
        detail: "opening the relay",
      });
      this.emit({ type: "agent.state", state: "initializing" });
      const ended = await runOpenAI({
        gateway: this.gateway,
        config: openaiConfig,
        audio: this.audio,
        emit: (m) => this.emit(m),
        status: (s) => this.setStatus(s),
        signal,
        log: (line) => this.log(line),
      });
      if (signal.aborted) return;
      const stable = ended.opened && performance.now() - started >= this.options.stableAfterMs;
      failures = stable ? 1 : failures + 1;
      const wait = this.backoff(failures);
      this.setStatus({
        phase: "reconnecting",
        error: `the relay connection ended: ${ended.reason}`,
        detail: `reconnecting in ${Math.round(wait / 100) / 10} s`,
      });
      await sleep(wait, signal);
    }
  }

  /** Call `step` until it succeeds, backing off between failures; null once disconnected. */
  async retrying(what, step) {
    const label = what === "session" ? "session request" : "fallback report";
    const signal = this.abort.signal;
    for (let attempt = 1; !signal.aborted; attempt++) {
      try {
        const result = await step();
        if (attempt > 1) this.setStatus({ error: null, attempt: 0 });
        return result;
      } catch (err) {
        if (signal.aborted) break;
        const wait = Math.max(this.backoff(attempt), err.retryAfterMs ?? 0);
        this.setStatus({
          error: `${label} failed: ${describe(err)}`,
          detail: `retrying in ${Math.round(wait / 100) / 10} s (attempt ${attempt})`,
          attempt,
        });
        await sleep(wait, signal);
      }
    }
    return null;
  }

  backoff(attempt) {
    const { backoffBaseMs, backoffMaxMs } = this.options;
    const ceiling = Math.min(backoffMaxMs, backoffBaseMs * 2 ** Math.min(attempt - 1, 16));
    return ceiling / 2 + Math.random() * (ceiling / 2); // "equal jitter"
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
      throw new GatewayError(0, "bad_fallback", "the gateway's fallback session is not openai");
    }
    return config;
  }

  async request(url, init) {
    let response;
    try {
      response = await fetch(url, { ...init, cache: "no-store", signal: this.abort.signal });
    } catch (err) {
      if (this.abort.signal.aborted) throw err;
      throw new GatewayError(0, "unreachable", `the gateway is unreachable (${describe(err)})`);
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
      throw new GatewayError(
        response.status,
        code,
        `${response.status} ${code}: ${message}`,
        retryAfterMs,
      );
    }
    if (!body || body.contract_version !== 1) {
      throw new GatewayError(response.status, "bad_session", "unexpected session config");
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
    Object.assign(this.state, changes);
    this.dispatch("status", this.status);
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
