// A stand-in for the vendored livekit-client, served in its place by the livekit-mode tests:
// no LiveKit server runs here, so the test drives the room from outside instead
// (`window.fakeLiveKit`). It offers only what voice-livekit.js uses, with the real names and
// values; test_livekit_mode.py checks those against the real module.

export const RoomEvent = {
  ParticipantConnected: "participantConnected",
  ParticipantDisconnected: "participantDisconnected",
  DataReceived: "dataReceived",
  TrackSubscribed: "trackSubscribed",
  AudioPlaybackStatusChanged: "audioPlaybackChanged",
  Reconnecting: "reconnecting",
  Reconnected: "reconnected",
  Disconnected: "disconnected",
};

export const Track = {
  Kind: { Audio: "audio", Video: "video" },
  Source: { Microphone: "microphone" },
};

export const DisconnectReason = { 0: "UNKNOWN_REASON", 1: "CLIENT_INITIATED", 9: "SIGNAL_CLOSE" };

const control = {
  rooms: [],
  connectCalls: [],
  microphoneOptions: null,
  disconnects: 0,
  get room() {
    return this.rooms.at(-1);
  },
  /** The agent's track: what it plays, and when (performance.now() of the page). */
  agentTrack: null,
  played: [],
  /** An agent participant joins and publishes a tone, audible at once unless `silent`. */
  agentJoins(identity = "agent-AJ_test", { silent = false } = {}) {
    const room = this.room;
    const agent = { identity, isAgent: true };
    room.remoteParticipants.set(identity, agent);
    room.emit(RoomEvent.ParticipantConnected, agent);
    this.agentTrack = toneTrack(!silent);
    room.emit(RoomEvent.TrackSubscribed, this.agentTrack, {}, agent);
  },
  /** The agent's track carries the tone for `ms`, then silence; `played` records the span. */
  play(ms) {
    const span = { start: performance.now(), end: null };
    this.played.push(span);
    this.agentTrack.setAudible(true);
    setTimeout(() => {
      this.agentTrack.setAudible(false);
      span.end = performance.now();
    }, ms);
  },
  agentLeaves(identity = "agent-AJ_test") {
    const room = this.room;
    const agent = room.remoteParticipants.get(identity);
    room.remoteParticipants.delete(identity);
    room.emit(RoomEvent.ParticipantDisconnected, agent);
  },
  /** The agent publishes `message` on the data channel (reliable, topic voice.state). */
  send(message, topic = "voice.state") {
    const payload = new TextEncoder().encode(JSON.stringify(message));
    const agent = [...this.room.remoteParticipants.values()][0];
    this.room.emit(RoomEvent.DataReceived, payload, agent, 0, topic);
  },
  /** The room drops for good (LiveKit gave up reconnecting). */
  drop() {
    this.room.emit(RoomEvent.Disconnected, 9);
  },
};
globalThis.fakeLiveKit = control;

export class Room {
  constructor(options) {
    this.options = options;
    this.listeners = new Map();
    this.remoteParticipants = new Map();
    this.canPlaybackAudio = true;
    this.localParticipant = new LocalParticipant();
    control.rooms.push(this);
  }

  on(event, listener) {
    if (!this.listeners.has(event)) this.listeners.set(event, []);
    this.listeners.get(event).push(listener);
    return this;
  }

  emit(event, ...args) {
    for (const listener of this.listeners.get(event) ?? []) listener(...args);
  }

  removeAllListeners() {
    this.listeners.clear();
    return this;
  }

  async connect(url, token, options) {
    control.connectCalls.push({ url, token, options });
  }

  async disconnect() {
    control.disconnects += 1;
    // Like livekit-client: leaving unpublishes and stops the local tracks.
    this.localParticipant.microphone?.track.mediaStreamTrack.stop();
    this.emit(RoomEvent.Disconnected, 1);
  }
}

class LocalParticipant {
  constructor() {
    this.microphone = null;
  }

  async setMicrophoneEnabled(enabled, options) {
    control.microphoneOptions = options;
    const stream = await navigator.mediaDevices.getUserMedia({ audio: options });
    this.microphone = { track: { mediaStreamTrack: stream.getAudioTracks()[0] } };
  }

  getTrackPublication(source) {
    return source === Track.Source.Microphone ? this.microphone : undefined;
  }
}

function toneTrack(audible) {
  const context = new AudioContext();
  const oscillator = new OscillatorNode(context, { frequency: 330 });
  const gain = new GainNode(context, { gain: audible ? 0.3 : 0 });
  const destination = context.createMediaStreamDestination();
  oscillator.connect(gain).connect(destination);
  oscillator.start();
  const mediaStreamTrack = destination.stream.getAudioTracks()[0];
  const elements = [];
  return {
    kind: Track.Kind.Audio,
    mediaStreamTrack,
    setAudible(on) {
      gain.gain.setValueAtTime(on ? 0.3 : 0, context.currentTime);
    },
    attach() {
      const element = document.createElement("audio");
      element.autoplay = true;
      element.srcObject = new MediaStream([mediaStreamTrack]);
      elements.push(element);
      return element;
    },
    detach() {
      oscillator.stop();
      context.close();
      return elements.splice(0);
    },
  };
}
