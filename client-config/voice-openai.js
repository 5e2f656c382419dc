// openai mode: the gateway's relay (`WS /v1/realtime`), which speaks the OpenAI Realtime GA
// protocol upstream and sends the shared state messages beside the forwarded events.
//
// The page sends `input_audio_buffer.append` frames (pcm16, 24 kHz, 20 ms) captured through an
// AudioWorklet, plays `response.output_audio.delta` through another, and stops playback on
// `input_audio_buffer.speech_started` (barge-in). Turn detection runs on the server.

import { describeMicrophone } from "./voice-audio.js";
import { asStateMessage } from "./voice-messages.js";

const MAX_BUFFERED_BYTES = 512 * 1024; // ~10 s of audio: beyond that the link is not keeping up

/** The relay's WebSocket URL for a session config, relative to the gateway. */
export function relaySocketUrl(gateway, relay) {
  const url = new URL(relay.url, gateway);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  url.searchParams.set("ticket", relay.ticket);
  return url.href;
}

/**
 * Run one relay connection until it ends. The microphone opens first: without it there is no
 * point in spending a ticket and an upstream session. Resolves with `{ microphone }` when it
 * cannot open, else with `{ reason, opened, fatal }` when the socket closes for any reason
 * other than `signal` being aborted (then `{ reason: "disconnected" }`). Never rejects:
 * failures are reasons, the caller decides to reconnect.
 */
export async function runOpenAI({ gateway, config, audio, emit, status, signal, log }) {
  let socket = null;
  let capture;
  try {
    capture = await audio.startCapture((frame) => sendAudio(socket, frame, audio.counters));
  } catch (err) {
    return { microphone: describeMicrophone(err) };
  }
  if (signal.aborted) {
    capture.stop();
    return { reason: "disconnected", opened: false };
  }
  socket = new WebSocket(relaySocketUrl(gateway, config.relay));
  let lastError = null;
  let opened = false;

  const finished = new Promise((resolve) => {
    const onAbort = () => socket.close(1000, "page disconnected");
    signal.addEventListener("abort", onAbort, { once: true });
    socket.addEventListener("close", (event) => {
      signal.removeEventListener("abort", onAbort);
      if (signal.aborted) return resolve({ reason: "disconnected", opened });
      const why = lastError
        ? `${lastError.code}: ${lastError.message}`
        : `relay closed (${event.code}${event.reason ? ` ${event.reason}` : ""})`;
      resolve({ reason: why, opened, fatal: lastError?.fatal ?? false });
    });
  });

  socket.addEventListener("open", () => {
    opened = true;
    log("relay open");
    status({ phase: "connected", detail: null });
  });

  const handlers = {
    "input_audio_buffer.speech_started": () => audio.player.clear(),
    "response.output_audio.delta": (event) => audio.player.push(decodePcm16(event.delta)),
    "response.output_audio.done": () => audio.player.end(),
    "response.done": () => audio.player.end(),
    // OpenAI's own error event; the relay sends voice.error beside it when it matters.
    error: (event) => log(`upstream error: ${event.error?.message ?? "unknown"}`),
  };

  socket.addEventListener("message", (event) => {
    if (typeof event.data !== "string") return;
    let message;
    try {
      message = JSON.parse(event.data);
    } catch {
      log("relay sent a frame that is not JSON");
      return;
    }
    const state = asStateMessage(message);
    if (state) {
      if (state.type === "voice.error" && state.fatal) lastError = state;
      emit(state);
      return;
    }
    handlers[message?.type]?.(message);
  });

  try {
    return await finished;
  } finally {
    capture.stop();
    audio.player.clear();
  }
}

function sendAudio(socket, frame, counters) {
  if (socket?.readyState !== WebSocket.OPEN) return;
  if (socket.bufferedAmount > MAX_BUFFERED_BYTES) {
    counters.droppedFrames += 1;
    return;
  }
  socket.send(
    JSON.stringify({ type: "input_audio_buffer.append", audio: encodeBase64(frame.buffer) }),
  );
  counters.sentSamples += frame.length;
}

function encodeBase64(buffer) {
  const bytes = new Uint8Array(buffer);
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(binary);
}

/** base64 pcm16 little-endian -> Float32Array in [-1, 1). */
export function decodePcm16(base64) {
  const binary = atob(base64);
  const samples = new Float32Array(binary.length >> 1);
  for (let i = 0; i < samples.length; i++) {
    let v = binary.charCodeAt(2 * i) | (binary.charCodeAt(2 * i + 1) << 8);
    if (v >= 0x8000) v -= 0x10000;
    samples[i] = v / 0x8000;
  }
  return samples;
}

function describe(err) {
  return err?.message || String(err);
}
