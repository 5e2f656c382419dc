// The page's audio: one AudioContext for the whole visit, the capture and playback worklets of
// openai mode, the analysers behind the level meter (both modes), and what the room hears:
//
// - agentAudible: the page is playing the agent's audio. openai mode: the playback worklet is
//   rendering queued audio (it says so the moment it starts or drains); livekit mode: the
//   agent's received track is above AGENT_AUDIBLE_RMS. A short release bridges the gaps between
//   words and network hiccups; a barge-in (`player.clear()`) ends it at once.
// - meetingSpeaking: the microphone (the meeting) is above MEETING_SPEECH_DBFS, held through the
//   pauses between words. The page's own level gate: turns are still the server VAD's to take.

/** Microphone constraints of both modes: the meeting's audio, cleaned up by the browser. */
export const MICROPHONE = {
  echoCancellation: true,
  noiseSuppression: true,
  autoGainControl: true,
  channelCount: 1,
};

// About -50 dBFS RMS: above the noise floor of a decoded WebRTC track, below any speech.
const AGENT_AUDIBLE_RMS = 0.003;
// The meeting speaks when its level crosses this (RMS over ~20 ms, after the browser's noise
// suppression and gain control).
export const MEETING_SPEECH_DBFS = -45;
const MEETING_SPEECH_RMS = 10 ** (MEETING_SPEECH_DBFS / 20);
const AGENT_RELEASE_MS = 250;
const MEETING_RELEASE_MS = 400;
const MONITOR_MS = 20;

/** A person's words for why getUserMedia failed. */
export function describeMicrophone(err) {
  const reasons = {
    NotAllowedError: "Permission to use the microphone was denied",
    SecurityError: "The page needs https to use a microphone",
    NotFoundError: "No microphone is connected",
    NotReadableError: "The microphone is in use or failed",
    OverconstrainedError: "No microphone fits the audio settings",
  };
  return reasons[err?.name] ?? `The microphone did not open (${err?.message || String(err)})`;
}

export class AudioEngine {
  /**
   * @param {{ log: (text: string) => void, onBlocked?: (blocked: boolean) => void,
   *           onActivity?: (activity: { agentAudible: boolean, meetingSpeaking: boolean })
   *             => void, frameMs?: number }} options
   */
  constructor({ log, onBlocked = () => {}, onActivity = () => {}, frameMs = 20 }) {
    this.log = log;
    this.onBlocked = onBlocked;
    this.onActivity = onActivity;
    this.frameMs = frameMs;
    this.activity = { agentAudible: false, meetingSpeaking: false };
    this.playerPlaying = false; // the worklet renders queued audio now
    this.agentHeardAt = -Infinity;
    this.meetingHeardAt = -Infinity;
    this.monitor = null;
    this.readying = null; // the one ready() in flight or done
    this.context = null;
    this.inputAnalyser = null;
    this.outputAnalyser = null;
    this.inputSource = null; // what feeds inputAnalyser now
    this.outputSources = new Set(); // remote tracks feeding outputAnalyser (livekit mode)
    this.playerNode = null;
    this.counters = { sentSamples: 0, droppedFrames: 0 };
    this.playerStats = { playedSamples: 0, audibleSamples: 0, underruns: 0, cleared: 0 };
    this.peakOutput = 0;
    this.player = {
      push: (samples) => this.playerNode?.port.postMessage({ type: "push", samples }, [
        samples.buffer,
      ]),
      end: () => this.playerNode?.port.postMessage({ type: "end" }),
      clear: () => {
        this.playerNode?.port.postMessage({ type: "clear" });
        // What was queued is gone: the room stops hearing the agent now, not after a release.
        this.playerPlaying = false;
        this.agentHeardAt = -Infinity;
        this.watchActivity();
      },
    };
  }

  /** Create the context, worklets and analysers once; later calls share the first. */
  ready() {
    this.readying ??= this.create().catch((err) => {
      this.readying = null;
      throw err;
    });
    return this.readying;
  }

  async create() {
    const context = new AudioContext({ latencyHint: "interactive" });
    // Recall.ai's browser lets pages play without a gesture; a person's browser may not.
    // Not awaited: without permission to autoplay, resume() waits for a click.
    const resume = () => {
      if (context.state === "suspended") context.resume().catch(() => {});
    };
    for (const type of ["pointerdown", "keydown"]) document.addEventListener(type, resume);
    context.addEventListener("statechange", () => this.onBlocked(context.state === "suspended"));
    await context.audioWorklet.addModule(new URL("./audio-worklets.js", import.meta.url));
    this.inputAnalyser = new AnalyserNode(context, { fftSize: 1024 });
    this.outputAnalyser = new AnalyserNode(context, { fftSize: 1024 });
    this.outputAnalyser.connect(context.destination);
    this.playerNode = new AudioWorkletNode(context, "pcm-player", {
      numberOfInputs: 0,
      outputChannelCount: [1],
      processorOptions: { prebufferMs: 60 },
    });
    this.playerNode.port.onmessage = (event) => {
      const { playing, ended, ...stats } = event.data;
      this.playerStats = stats;
      if (playing !== this.playerPlaying) {
        this.playerPlaying = playing;
        // The reply is over: nothing to bridge. Otherwise the network fell behind: a gap.
        if (!playing && ended) this.agentHeardAt = -Infinity;
        this.watchActivity();
      }
    };
    this.playerNode.connect(this.outputAnalyser);
    this.context = context;
    this.monitor = setInterval(() => this.watchActivity(), MONITOR_MS);
    resume();
    this.onBlocked(context.state === "suspended");
    return context;
  }

  /**
   * openai mode: open the microphone and call `onFrame(Int16Array)` with pcm16 24 kHz frames.
   * Returns `{ stop() }`.
   */
  async startCapture(onFrame) {
    const context = await this.ready();
    if (!navigator.mediaDevices) {
      // Browsers hide the API outside secure contexts (https, or localhost).
      throw new DOMException("the page is not served over https", "SecurityError");
    }
    const stream = await navigator.mediaDevices.getUserMedia({ audio: MICROPHONE });
    const source = context.createMediaStreamSource(stream);
    const node = new AudioWorkletNode(context, "pcm-capture", {
      numberOfOutputs: 1,
      outputChannelCount: [1],
      processorOptions: { frameMs: this.frameMs },
    });
    node.port.onmessage = (event) => onFrame(event.data);
    // A worklet only runs while the graph pulls it: end in a muted sink.
    const sink = new GainNode(context, { gain: 0 });
    source.connect(node).connect(sink).connect(context.destination);
    this.watchInput(source);
    this.log(`microphone open at ${context.sampleRate} Hz, sending pcm16 24 kHz`);
    return {
      stop: () => {
        node.port.onmessage = null;
        if (this.inputSource === source) this.inputSource = null;
        source.disconnect();
        node.disconnect();
        sink.disconnect();
        for (const track of stream.getTracks()) track.stop();
      },
    };
  }

  /** livekit mode: meter the published microphone track. */
  watchInputTrack(track) {
    if (!this.context || !track) return;
    this.watchInput(this.context.createMediaStreamSource(new MediaStream([track])));
  }

  /** livekit mode: meter a remote audio track (it plays through its own <audio> element). */
  watchOutputTrack(track) {
    if (!this.context || !track) return () => {};
    const source = this.context.createMediaStreamSource(new MediaStream([track]));
    // Metered only: the analyser feeds the destination, so keep this source off it.
    const meter = new AnalyserNode(this.context, { fftSize: 1024 });
    source.connect(meter);
    const entry = { source, meter };
    this.outputSources.add(entry);
    return () => {
      source.disconnect();
      this.outputSources.delete(entry);
    };
  }

  watchInput(source) {
    try {
      this.inputSource?.disconnect(this.inputAnalyser);
    } catch {
      // Already disconnected (its track ended): nothing to undo.
    }
    source.connect(this.inputAnalyser);
    this.inputSource = source;
  }

  /** RMS levels in [0, 1] of the microphone and of what the page plays, right now. */
  levels() {
    const input = rms(this.inputAnalyser);
    let output = rms(this.outputAnalyser);
    for (const { meter } of this.outputSources) output = Math.max(output, rms(meter));
    this.peakOutput = Math.max(this.peakOutput, output);
    return { input, output };
  }

  /** Re-derive agentAudible and meetingSpeaking; tell onActivity when either changed. */
  watchActivity() {
    if (!this.context) return;
    const now = performance.now();
    let track = 0;
    for (const { meter } of this.outputSources) track = Math.max(track, rms(meter));
    if (this.playerPlaying || track > AGENT_AUDIBLE_RMS) this.agentHeardAt = now;
    if (rms(this.inputAnalyser) > MEETING_SPEECH_RMS) this.meetingHeardAt = now;
    const activity = {
      agentAudible: now - this.agentHeardAt <= AGENT_RELEASE_MS,
      meetingSpeaking: now - this.meetingHeardAt <= MEETING_RELEASE_MS,
    };
    const { agentAudible, meetingSpeaking } = this.activity;
    if (activity.agentAudible === agentAudible && activity.meetingSpeaking === meetingSpeaking) {
      return;
    }
    this.activity = activity;
    this.onActivity({ ...activity });
  }

  stats() {
    const { sampleRate: _, ...player } = this.playerStats; // null once closed, not the worklet's
    return {
      sampleRate: this.context?.sampleRate ?? null,
      ...this.counters,
      ...player,
      peakOutput: this.peakOutput,
    };
  }

  async close() {
    clearInterval(this.monitor);
    if (this.playerNode) this.playerNode.port.onmessage = null;
    for (const { source } of this.outputSources) source.disconnect();
    this.outputSources.clear();
    await this.context?.close();
    this.context = null;
    this.readying = null;
    this.activity = { agentAudible: false, meetingSpeaking: false };
    this.onActivity({ ...this.activity });
  }
}

const scratch = new Float32Array(1024);

function rms(analyser) {
  if (!analyser) return 0;
  analyser.getFloatTimeDomainData(scratch);
  let sum = 0;
  for (const s of scratch) sum += s * s;
  return Math.sqrt(sum / scratch.length);
}
