// The shared state messages (contract version 1), as the generated JSON Schemas in
// schemas/state-message.schema.json define them. A test keeps these lists equal to the schema.

export const CONTRACT_VERSION = 1;

/** Data-channel topic of the state messages in livekit mode. */
export const STATE_TOPIC = "voice.state";

export const STATE_MESSAGE_TYPES = new Set([
  "agent.state",
  "transcript.user",
  "transcript.assistant",
  "tool.started",
  "tool.finished",
  "metrics.turn",
  "voice.error",
]);

export const AGENT_STATES = new Set(["initializing", "listening", "thinking", "speaking", "idle"]);

/** `value` when it is a state message, else null (other events and unknown types). */
export function asStateMessage(value) {
  if (!value || typeof value !== "object" || !STATE_MESSAGE_TYPES.has(value.type)) return null;
  if (value.type === "agent.state" && !AGENT_STATES.has(value.state)) return null;
  return value;
}

/** A state message parsed from JSON text, or null when the text is not one. */
export function parseStateMessage(text) {
  try {
    return asStateMessage(JSON.parse(text));
  } catch {
    return null;
  }
}
