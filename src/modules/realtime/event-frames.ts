import type { EventView } from '../events/events-schemas';

// The hub hands the same event objects to every subscriber of a thread: serialise each once.
const json = new WeakMap<EventView, string>();
const wsFrames = new WeakMap<EventView, Buffer>();

export function eventJson(e: EventView): string {
  let s = json.get(e);
  if (s === undefined) json.set(e, (s = JSON.stringify(e)));
  return s;
}

/**
 * The WebSocket message for one event, {"type":"event","thread_id":…,"event":{…}}, encoded
 * once as UTF-8 and shared by every socket (server frames are not masked, so the bytes are
 * the same for all of them).
 */
export function wsEventFrame(e: EventView): Buffer {
  let b = wsFrames.get(e);
  if (b === undefined)
    wsFrames.set(
      e,
      (b = Buffer.from(`{"type":"event","thread_id":${JSON.stringify(e.thread_id)},"event":${eventJson(e)}}`)),
    );
  return b;
}

/** One SSE message: `id:` is the seq, the data is the event (its `type` field says which). */
export const sseEventFrame = (e: EventView) => `id: ${e.seq}\ndata: ${eventJson(e)}\n\n`;
