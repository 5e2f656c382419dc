// livekit mode: join the session's room, publish the microphone, play the agent, and read the
// state messages the agent publishes on the data channel (topic `voice.state`).
//
// It resolves with a fallback reason when LiveKit does not connect, when no agent joins within
// the timeout, or when the room drops for good; the caller then asks the gateway for the
// openai session. A microphone the browser will not open is not LiveKit's failure: it resolves
// with `{ microphone }` instead, and the caller retries without blaming LiveKit.
// livekit-client is served by the gateway from vendor/ (pinned npm package).

import { describeMicrophone, MICROPHONE } from "./voice-audio.js";
import { parseStateMessage, STATE_TOPIC } from "./voice-messages.js";

// getUserMedia's refusals, which livekit-client passes on unwrapped.
const DEVICE_ERRORS = new Set([
  "NotAllowedError",
  "NotFoundError",
  "NotReadableError",
  "OverconstrainedError",
  "SecurityError",
]);

const LIVEKIT_MODULE = "./vendor/livekit-client.esm.mjs";
// How long leaving the room may take before the page goes on without it.
const LEAVE_TIMEOUT_MS = 2000;

/**
 * Run one livekit session. Resolves with `{ fallback: { code, detail } }` when the page should
 * switch to openai mode, `{ microphone: reason }` when the microphone cannot open, or
 * `{ fallback: null }` when `signal` was aborted or the page left the room itself. Never
 * rejects.
 */
export async function runLiveKit({ config, audio, emit, status, signal, log, agentTimeoutMs }) {
  let lk;
  try {
    lk = await import(LIVEKIT_MODULE);
  } catch (err) {
    return { fallback: { code: "livekit_unavailable", detail: describe(err) } };
  }
  const { Room, RoomEvent, Track, DisconnectReason } = lk;
  const seconds = Math.round(agentTimeoutMs / 100) / 10;
  const room = new Room({
    adaptiveStream: false,
    dynacast: false,
    audioCaptureDefaults: MICROPHONE,
  });
  const detachers = [];

  return new Promise((resolve) => {
    let settled = false;
    let connected = false;
    let agentTimer = null;

    const finish = (fallback, microphone = null) => {
      if (settled) return;
      settled = true;
      clearTimeout(agentTimer);
      signal.removeEventListener("abort", onAbort);
      for (const detach of detachers) detach();
      room.removeAllListeners();
      // Leave the room (which stops its microphone track) before the caller goes on: a
      // fallback's relay then opens the only capture of the meeting's audio. Bounded, for a
      // LiveKit that no longer answers.
      const left = room.disconnect().catch(() => {});
      const leaveTimeout = new Promise((done) => setTimeout(done, LEAVE_TIMEOUT_MS));
      Promise.race([left, leaveTimeout]).then(() =>
        resolve(microphone ? { fallback: null, microphone } : { fallback }),
      );
    };
    const onAbort = () => finish(null);
    signal.addEventListener("abort", onAbort, { once: true });

    const waitForAgent = (code, detail) => {
      clearTimeout(agentTimer);
      agentTimer = setTimeout(() => finish({ code, detail }), agentTimeoutMs);
    };
    const agents = () => [...room.remoteParticipants.values()].filter((p) => p.isAgent);
    const agentJoined = (participant) => {
      clearTimeout(agentTimer);
      log(`agent ${participant.identity} joined`);
      status({ phase: "connected", detail: null });
    };

    // One deadline covers connecting and the agent's arrival.
    agentTimer = setTimeout(() => {
      finish(
        connected
          ? { code: "agent_timeout", detail: `no agent joined within ${seconds} s` }
          : { code: "livekit_timeout", detail: `LiveKit did not connect within ${seconds} s` },
      );
    }, agentTimeoutMs);

    room
      .on(RoomEvent.ParticipantConnected, (p) => p.isAgent && agentJoined(p))
      .on(RoomEvent.ParticipantDisconnected, (p) => {
        if (p.isAgent && agents().length === 0) {
          log("the agent left");
          status({ phase: "waiting", detail: "the agent left; waiting for it to come back" });
          waitForAgent("agent_left", `the agent left and did not return within ${seconds} s`);
        }
      })
      .on(RoomEvent.DataReceived, (payload, _participant, _kind, topic) => {
        if (topic !== STATE_TOPIC) return;
        const message = parseStateMessage(new TextDecoder().decode(payload));
        if (message) emit(message);
      })
      .on(RoomEvent.TrackSubscribed, (track) => {
        if (track.kind !== Track.Kind.Audio) return;
        const element = track.attach();
        element.hidden = true;
        document.body.append(element);
        const unwatch = audio.watchOutputTrack(track.mediaStreamTrack);
        detachers.push(() => {
          unwatch();
          track.detach();
          // livekit-client detaches a track itself when the room goes; the element is ours.
          element.remove();
        });
      })
      .on(RoomEvent.AudioPlaybackStatusChanged, () => {
        if (!room.canPlaybackAudio) log("the browser blocked audio playback until a click");
      })
      .on(RoomEvent.Reconnecting, () => status({ phase: "reconnecting", detail: "LiveKit" }))
      .on(RoomEvent.Reconnected, () => status({ phase: "connected", detail: null }))
      .on(RoomEvent.Disconnected, (reason) => {
        if (!connected) return; // a failed join: connect() rejects with the cause
        // The page left (livekit-client disconnects on beforeunload, before our pagehide):
        // nothing failed, so nothing is reported; a report would pin a reloaded page to openai.
        if (reason === DisconnectReason?.CLIENT_INITIATED) return finish(null);
        const name = DisconnectReason?.[reason] ?? String(reason ?? "unknown");
        finish({ code: "room_disconnected", detail: `the room dropped (${name})` });
      });

    const start = async () => {
      // The page's own audio graph only meters in this mode: without it the call goes on.
      await audio.ready().catch((err) => log(`no level meter: ${describe(err)}`));
      await room.connect(config.livekit.url, config.livekit.token, { maxRetries: 1 });
      if (settled) return;
      connected = true;
      log(`joined ${config.livekit.room}`);
      status({ phase: "waiting", detail: "waiting for the agent" });
      // An agent already in the room (a reload) counts now, not once the microphone is open:
      // a slow permission prompt must not run out the agent's timer.
      const present = agents();
      if (present.length > 0) agentJoined(present[0]);
      await room.localParticipant.setMicrophoneEnabled(true, MICROPHONE);
      const mic = room.localParticipant.getTrackPublication(Track.Source.Microphone);
      audio.watchInputTrack(mic?.track?.mediaStreamTrack);
    };
    start().catch((err) => {
      if (connected && DEVICE_ERRORS.has(err?.name)) {
        finish(null, describeMicrophone(err));
        return;
      }
      finish(
        connected
          ? { code: "microphone", detail: `could not publish the microphone: ${describe(err)}` }
          : { code: "livekit_connect_failed", detail: `LiveKit did not connect: ${describe(err)}` },
      );
    });
  });
}

function describe(err) {
  return err?.message || String(err);
}
