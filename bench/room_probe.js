// bench/livekit_room.py adds this to the meeting page before its own scripts run. It taps the
// microphone the page opens and every remote audio track it plays (livekit-client attaches
// each to an <audio> element through `srcObject`) in one AudioContext, and keeps the loud runs
// of each as [start, end] in that context's clock (seconds): `window.__bench.input` and
// `.output`. Voice-to-voice is then measured as `voicegw talk` measures it: from the end of
// the speech the page captured to the first audible sample of the reply it received. The
// microphone is held back until `window.__bench.openMic()` (once the agent is in the room).
(() => {
  const LOUD = 0.02;
  const bench = (window.__bench = { input: [], output: [], rate: 0, answers: 0 });
  let context = null;
  let openMic;
  const micOpen = new Promise((resolve) => (openMic = resolve));
  bench.openMic = () => openMic();

  function tap(stream, runs) {
    context ??= new AudioContext();
    bench.rate = context.sampleRate;
    const source = context.createMediaStreamSource(stream);
    const processor = context.createScriptProcessor(256, 1, 1);
    let open = null;
    processor.onaudioprocess = (event) => {
      const samples = event.inputBuffer.getChannelData(0);
      for (let i = 0; i < samples.length; i++) {
        const t = event.playbackTime + i / context.sampleRate;
        if (Math.abs(samples[i]) > LOUD) {
          if (open === null) {
            open = [t, t];
            runs.push(open);
          }
          open[1] = t;
        } else if (open !== null && t - open[1] > 0.05) {
          open = null;
        }
      }
    };
    source.connect(processor).connect(new GainNode(context, { gain: 0 })).connect(context.destination);
  }

  // Answers counted from the first (the page's transcript keeps only the last few lines).
  let voicePage;
  Object.defineProperty(window, "voicePage", {
    configurable: true,
    get: () => voicePage,
    set(value) {
      voicePage = value;
      value.voice?.on("transcript.assistant", (m) => m.final && (bench.answers += 1));
    },
  });

  const devices = navigator.mediaDevices;
  const getUserMedia = devices.getUserMedia.bind(devices);
  devices.getUserMedia = async (constraints) => {
    await micOpen;
    const stream = await getUserMedia(constraints);
    tap(stream, bench.input);
    return stream;
  };

  const srcObject = Object.getOwnPropertyDescriptor(HTMLMediaElement.prototype, "srcObject");
  Object.defineProperty(HTMLMediaElement.prototype, "srcObject", {
    configurable: true,
    get() {
      return srcObject.get.call(this);
    },
    set(stream) {
      srcObject.set.call(this, stream);
      if (stream instanceof MediaStream && stream.getAudioTracks().length) {
        tap(new MediaStream(stream.getAudioTracks()), bench.output);
      }
    },
  });
})();
