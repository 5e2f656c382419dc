// The page's audio: one AudioContext for the whole visit, the capture and playback worklets of
// openai mode, and the analysers behind the level meter (both modes).

/** Microphone constraints of both modes: the meeting's audio, cleaned up by the browser. */
export const MICROPHONE = {
  echoCancellation: true,
  noiseSuppression: true,
  autoGainControl: true,
  channelCount: 1,
};

export class AudioEngine {
  /**
   * @param {{ log: (text: string) => void, onBlocked?: (blocked: boolean) => void,
   *           frameMs?: number }} options
   */
  constructor({ log, onBlocked = () => {}, frameMs = 20 }) {
    this.log = log;
    this.onBlocked = onBlocked;
    this.frameMs = frameMs;
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
      clear: () => this.playerNode?.port.postMessage({ type: "clear" }),
    };
  }

  /** Create the context, worklets and analysers once; later calls return at once. */
  async ready() {
    if (this.context) return this.context;
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
      this.playerStats = event.data;
    };
    this.playerNode.connect(this.outputAnalyser);
    this.context = context;
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

  stats() {
    return {
      sampleRate: this.context?.sampleRate ?? null,
      ...this.counters,
      ...this.playerStats,
      peakOutput: this.peakOutput,
    };
  }

  async close() {
    for (const { source } of this.outputSources) source.disconnect();
    this.outputSources.clear();
    await this.context?.close();
    this.context = null;
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
