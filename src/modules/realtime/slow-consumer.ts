/**
 * Judges a live subscriber by its backlog over time, not by one burst: a subscriber is cut off
 * when its unsent data stays above `maxBytes` for `graceMs` (it is not reading, or reads slower
 * than the thread is written), or at once above `hardMaxBytes` (memory stays bounded whatever
 * the grace). One batch of 1,000 messages may overshoot `maxBytes` while the reader catches up.
 */
export interface SlowConsumerPolicy {
  maxBytes: number;
  graceMs: number;
}

/** How far past `maxBytes` one burst may go before the grace period no longer applies. */
export const HARD_LIMIT_FACTOR = 32;

export interface BacklogJudge {
  /** Call after queueing data for the subscriber. */
  check(): void;
  stop(): void;
}

export function createBacklogJudge(
  policy: SlowConsumerPolicy,
  buffered: () => number,
  cutOff: () => void,
): BacklogJudge {
  let timer: NodeJS.Timeout | null = null;
  const stop = () => {
    if (timer) clearTimeout(timer);
    timer = null;
  };
  const judge = () => {
    timer = null;
    if (buffered() > policy.maxBytes) cutOff();
  };
  return {
    check() {
      const n = buffered();
      if (n > policy.maxBytes * HARD_LIMIT_FACTOR) {
        stop();
        cutOff();
      } else if (n > policy.maxBytes && !timer) {
        timer = setTimeout(judge, policy.graceMs);
        timer.unref();
      }
    },
    stop,
  };
}
