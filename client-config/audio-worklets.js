// AudioWorklet processors of the meeting page (loaded with audioWorklet.addModule).
//
// pcm-capture: the microphone, mixed to mono, resampled from the context rate to 24 kHz and
//   posted to the main thread as Int16Array frames of a fixed size (20 ms by default).
// pcm-player: plays 24 kHz mono Float32 chunks pushed by the main thread, resampled to the
//   context rate, without gaps: chunks are queued and read sample by sample, so a new chunk
//   continues exactly where the previous one ended. `clear` drops everything (barge-in).
//   It reports `playing` the moment it starts or stops rendering queued audio (the page's
//   "speaking" follows it), and its counters every 100 ms.
//
// `sampleRate` is a global of the AudioWorkletGlobalScope.

const TARGET_RATE = 24000;

/** Streaming linear-interpolation resampler; keeps its phase across blocks. */
class LinearResampler {
  constructor(fromRate, toRate) {
    this.step = fromRate / toRate;
    this.pos = 0; // position of the next output sample, in input samples, relative to `last`
    this.last = 0; // the previous block's final sample
  }

  reset() {
    this.pos = 0;
    this.last = 0;
  }

  /** Resample one block; returns a new Float32Array. */
  process(input) {
    const n = input.length;
    const out = new Float32Array(Math.ceil((n + 1) / this.step) + 1);
    let count = 0;
    let pos = this.pos;
    // Index 0 is `last`, indices 1..n are input[0..n-1].
    while (pos < n) {
      const i = Math.floor(pos);
      const frac = pos - i;
      const a = i === 0 ? this.last : input[i - 1];
      const b = input[i];
      out[count++] = a + (b - a) * frac;
      pos += this.step;
    }
    this.pos = pos - n;
    if (n > 0) this.last = input[n - 1];
    return out.subarray(0, count);
  }
}

class PcmCaptureProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const frameMs = options.processorOptions?.frameMs ?? 20;
    this.frameSamples = Math.round((TARGET_RATE * frameMs) / 1000);
    this.resampler = new LinearResampler(sampleRate, TARGET_RATE);
    this.frame = new Int16Array(this.frameSamples);
    this.filled = 0;
  }

  process(inputs) {
    const channels = inputs[0];
    if (!channels || channels.length === 0) return true;
    let mono = channels[0];
    if (channels.length > 1) {
      mono = new Float32Array(channels[0].length);
      for (const ch of channels) for (let i = 0; i < ch.length; i++) mono[i] += ch[i];
      for (let i = 0; i < mono.length; i++) mono[i] /= channels.length;
    }
    const resampled = this.resampler.process(mono);
    for (let i = 0; i < resampled.length; i++) {
      const s = Math.max(-1, Math.min(1, resampled[i]));
      this.frame[this.filled++] = s < 0 ? s * 0x8000 : s * 0x7fff;
      if (this.filled === this.frameSamples) {
        this.port.postMessage(this.frame, [this.frame.buffer]);
        this.frame = new Int16Array(this.frameSamples);
        this.filled = 0;
      }
    }
    return true;
  }
}

// A sample counts as audible above this amplitude (about -60 dBFS).
const AUDIBLE = 0.001;

class PcmPlayerProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const prebufferMs = options.processorOptions?.prebufferMs ?? 60;
    this.prebuffer = Math.round((sampleRate * prebufferMs) / 1000);
    this.resampler = new LinearResampler(TARGET_RATE, sampleRate);
    this.queue = [];
    this.offset = 0; // read position in queue[0]
    this.queued = 0; // samples waiting, at the context rate
    this.playing = false;
    this.ended = false; // the current response has no more audio coming
    this.stats = { playedSamples: 0, audibleSamples: 0, underruns: 0, cleared: 0 };
    this.sinceReport = 0;
    this.port.onmessage = (event) => this.onCommand(event.data);
  }

  onCommand(command) {
    if (command.type === "push") {
      this.ended = false;
      const chunk = this.resampler.process(command.samples);
      if (chunk.length > 0) {
        this.queue.push(chunk);
        this.queued += chunk.length;
      }
    } else if (command.type === "end") {
      this.ended = true;
    } else if (command.type === "clear") {
      if (this.queued > 0) this.stats.cleared += 1;
      this.queue = [];
      this.offset = 0;
      this.queued = 0;
      this.playing = false;
      this.ended = false;
      this.resampler.reset();
      this.report();
    }
  }

  report() {
    this.port.postMessage({
      ...this.stats,
      queuedSamples: this.queued,
      playing: this.playing,
      ended: this.ended,
      sampleRate,
    });
    this.sinceReport = 0;
  }

  process(_inputs, outputs) {
    const out = outputs[0][0];
    if (!this.playing && this.queued > 0 && (this.queued >= this.prebuffer || this.ended)) {
      this.playing = true;
      this.report();
    }
    let written = 0;
    if (this.playing) {
      while (written < out.length && this.queue.length > 0) {
        const head = this.queue[0];
        const n = Math.min(out.length - written, head.length - this.offset);
        for (let i = 0; i < n; i++) {
          const s = head[this.offset + i];
          out[written + i] = s;
          if (s > AUDIBLE || s < -AUDIBLE) this.stats.audibleSamples += 1;
        }
        written += n;
        this.offset += n;
        this.queued -= n;
        if (this.offset === head.length) {
          this.queue.shift();
          this.offset = 0;
        }
      }
      this.stats.playedSamples += written;
      if (this.queued === 0) {
        // Out of audio: either the response is over, or the network fell behind (a gap).
        if (!this.ended) this.stats.underruns += 1;
        this.playing = false;
        this.report();
      }
    }
    out.fill(0, written);
    for (let c = 1; c < outputs[0].length; c++) outputs[0][c].set(out);
    this.sinceReport += out.length;
    if (this.sinceReport >= sampleRate / 10) this.report();
    return true;
  }
}

registerProcessor("pcm-capture", PcmCaptureProcessor);
registerProcessor("pcm-player", PcmPlayerProcessor);
