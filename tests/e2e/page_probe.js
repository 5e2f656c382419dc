// Added to every page the end-to-end tests open, before the page's own scripts run: it keeps
// every state message the page's voice client emits (`window.__e2e.messages`, from the first)
// and counts the samples of every remote audio track the page plays (livekit-client attaches
// each to an <audio> element through `srcObject`): `played`, and `audible` above 0.02 of full
// scale, at `rate` Hz.
//
// It also holds the microphone back until the test calls `window.__e2e.openMic()`: Chromium's
// fake device plays its file from the moment it is opened, and the page opens it as soon as it
// has joined, when the agent may not be in the room yet to hear it. The page's own
// getUserMedia call (its constraints, the fake device) then goes ahead unchanged.
(() => {
  const probe = (window.__e2e = { messages: [], played: 0, audible: 0, rate: 0, tracks: 0 });

  let openMic;
  const micOpen = new Promise((resolve) => (openMic = resolve));
  probe.openMic = () => openMic();
  const devices = navigator.mediaDevices;
  const getUserMedia = devices.getUserMedia.bind(devices);
  devices.getUserMedia = async (constraints) => {
    await micOpen;
    return getUserMedia(constraints);
  };

  let voicePage;
  Object.defineProperty(window, "voicePage", {
    configurable: true,
    get: () => voicePage,
    set(value) {
      voicePage = value;
      value.voice?.on("message", (message) => probe.messages.push(message));
    },
  });

  const srcObject = Object.getOwnPropertyDescriptor(HTMLMediaElement.prototype, "srcObject");
  Object.defineProperty(HTMLMediaElement.prototype, "srcObject", {
    configurable: true,
    get() {
      return srcObject.get.call(this);
    },
    set(stream) {
      srcObject.set.call(this, stream);
      if (stream instanceof MediaStream && stream.getAudioTracks().length) count(stream);
    },
  });

  function count(stream) {
    const context = new AudioContext();
    probe.rate = context.sampleRate;
    probe.tracks += 1;
    const source = context.createMediaStreamSource(new MediaStream(stream.getAudioTracks()));
    const counter = context.createScriptProcessor(4096, 1, 1);
    counter.onaudioprocess = (event) => {
      const samples = event.inputBuffer.getChannelData(0);
      probe.played += samples.length;
      for (const value of samples) if (Math.abs(value) > 0.02) probe.audible += 1;
    };
    // A processor only runs while the graph pulls it: end in a muted sink.
    source.connect(counter).connect(new GainNode(context, { gain: 0 })).connect(context.destination);
  }
})();
