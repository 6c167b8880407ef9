import type { EventView } from '../events/events-schemas';

// The hub hands the same event objects (and, for a live read, the same array of them) to every
// subscriber of a thread: serialise each once, frame each once.
const json = new WeakMap<EventView, string>();
const wsFrames = new WeakMap<EventView, Buffer>();
const wsBatches = new WeakMap<readonly EventView[], Buffer>();

export function eventJson(e: EventView): string {
  let s = json.get(e);
  if (s === undefined) json.set(e, (s = JSON.stringify(e)));
  return s;
}

const headerLength = (n: number) => (n < 126 ? 2 : n < 65_536 ? 4 : 10);

/**
 * `text` as a whole unmasked, unfragmented WebSocket text frame (RFC 6455 §5.2: FIN + opcode 1,
 * the payload length in 7, 7+16 or 7+64 bits, then the UTF-8 payload), ready to be written to
 * a socket as it is. Server frames carry no mask, so every socket can get the same bytes.
 */
export function wsTextFrame(text: string): Buffer {
  const n = Buffer.byteLength(text);
  const head = headerLength(n);
  const frame = Buffer.allocUnsafe(head + n);
  frame[0] = 0x81;
  if (n < 126) frame[1] = n;
  else if (n < 65_536) {
    frame[1] = 126;
    frame.writeUInt16BE(n, 2);
  } else {
    frame[1] = 127;
    frame.writeUInt32BE(Math.floor(n / 2 ** 32), 2);
    frame.writeUInt32BE(n >>> 0, 6);
  }
  frame.write(text, head);
  return frame;
}

/** The payload of a frame made by wsTextFrame (no copy). */
export function wsFramePayload(frame: Buffer): Buffer {
  const code = frame[1] & 0x7f;
  return frame.subarray(code < 126 ? 2 : code === 126 ? 4 : 10);
}

/**
 * The WebSocket frame of one event, {"type":"event","thread_id":…,"event":{…}}: serialised,
 * encoded and framed once, and the same bytes written to every socket.
 */
export function wsEventFrame(e: EventView): Buffer {
  let b = wsFrames.get(e);
  if (b === undefined)
    wsFrames.set(
      e,
      (b = wsTextFrame(`{"type":"event","thread_id":${JSON.stringify(e.thread_id)},"event":${eventJson(e)}}`)),
    );
  return b;
}

/**
 * The frames of these events back to back, as one buffer: one socket write per subscriber for
 * a whole batch. Made once per array, so the subscribers of a live read, which all get the
 * hub's same array, share it.
 */
export function wsEventFrames(events: readonly EventView[]): Buffer {
  if (events.length === 1) return wsEventFrame(events[0]);
  let b = wsBatches.get(events);
  if (b === undefined) wsBatches.set(events, (b = Buffer.concat(events.map(wsEventFrame))));
  return b;
}

/** One SSE message: `id:` is the seq, the data is the event (its `type` field says which). */
export const sseEventFrame = (e: EventView) => `id: ${e.seq}\ndata: ${eventJson(e)}\n\n`;
