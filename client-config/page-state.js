// What the meeting page shows large: one state, derived from the connection, the agent's
// reported state and what the room hears. The order is the point: a connection that cannot
// carry the meeting's voice outranks everything the agent said before it was lost; what is
// audible outranks what the agent says it generates.

/** The shown state's word, by `data-state` value. */
export const STATE_WORDS = {
  // Nobody hears the meeting (yet, or any more).
  connecting: "Connecting",
  waiting: "Waiting",
  reconnecting: "Reconnecting",
  unreachable: "Offline",
  "no-microphone": "No microphone",
  stopped: "Stopped",
  disconnected: "Disconnected",
  // Connected: the agent's states (contract), and the meeting's own.
  initializing: "Starting",
  listening: "Listening",
  "meeting-speaking": "Hearing you",
  thinking: "Thinking",
  speaking: "Speaking",
  idle: "Ready",
};

const PHASE_STATES = {
  starting: "connecting",
  connecting: "connecting",
  fallback: "connecting",
  waiting: "waiting",
  reconnecting: "reconnecting",
  unreachable: "unreachable",
  "no-microphone": "no-microphone",
  stopped: "stopped",
  disconnected: "disconnected",
};

/**
 * @param {{ phase: string, agentState: string, agentAudible: boolean,
 *           meetingSpeaking: boolean }} now
 * @returns {string} a key of STATE_WORDS
 */
export function shownState({ phase, agentState, agentAudible, meetingSpeaking }) {
  if (phase !== "connected") return PHASE_STATES[phase] ?? "connecting";
  if (agentAudible) return "speaking";
  if (agentState === "initializing") return "initializing";
  if (meetingSpeaking) return "meeting-speaking";
  // The agent says it speaks but the room hears nothing yet: it is still producing the reply.
  if (agentState === "speaking") return "thinking";
  return agentState in STATE_WORDS ? agentState : "initializing";
}

/** What the line under the word says when nobody hears the meeting, by shown state. */
export const WAITING_LINES = {
  connecting: "Not listening yet",
  waiting: "The assistant has not joined yet",
  reconnecting: "Not listening while the connection is down",
  disconnected: "The page left the meeting's audio",
};
