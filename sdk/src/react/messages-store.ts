import type { Message, ProgressDBClient } from '../client';
import type { ProgressDBError } from '../errors';
import type { Tail, ThreadEvent } from '../tail';
import { randomId } from '../util';

/** A message as the UI shows it: sent ones, and optimistic ones still on their way. */
export interface ChatMessage extends Message {
  /** `sending` until the service acknowledged it; `failed` if it could not be sent. */
  status: 'sent' | 'sending' | 'failed';
  error?: ProgressDBError | Error;
}

export interface MessagesState {
  /** Ascending by seq; optimistic messages last, in the order sent. */
  messages: ChatMessage[];
  loading: boolean;
  loadingOlder: boolean;
  hasOlder: boolean;
  error: Error | undefined;
  /** Users typing now (not you). */
  typing: string[];
  /** Users online in the thread. */
  online: string[];
  /** Whether the live tail is connected. */
  live: boolean;
  /** The last seq of the thread log seen. */
  lastSeq: number;
}

const TYPING_TTL_MS = 6_000;

/**
 * The state behind useMessages, outside React so it can be reasoned about (and tested) alone:
 * the newest page, older pages on demand, live events from a tail started at the newest
 * message's seq, and optimistic sends reconciled by their client message id.
 */
export class MessagesStore {
  private state: MessagesState = {
    messages: [],
    loading: true,
    loadingOlder: false,
    hasOlder: false,
    error: undefined,
    typing: [],
    online: [],
    live: false,
    lastSeq: 0,
  };
  private readonly byId = new Map<string, ChatMessage>();
  private readonly listeners = new Set<() => void>();
  private readonly typingTimers = new Map<string, ReturnType<typeof setTimeout>>();
  private tail: Tail | null = null;
  private stopped = false;

  constructor(
    private readonly client: ProgressDBClient,
    readonly threadId: string,
    private readonly pageSize = 50,
  ) {}

  subscribe = (listener: () => void): (() => void) => {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  };

  getState = (): MessagesState => this.state;

  async start(): Promise<void> {
    try {
      const page = await this.client.messages.list(this.threadId, { limit: this.pageSize });
      if (this.stopped) return;
      for (const m of page.data) this.byId.set(m.id, { ...m, status: 'sent' });
      const newest = page.data.length ? page.data[page.data.length - 1].seq : 0;
      this.set({ loading: false, hasOlder: page.has_more_before, lastSeq: newest });
      // Everything after the newest message is replayed: edits and reactions that the page may
      // already show are applied idempotently (by version; reactions re-read the message).
      this.follow(newest);
    } catch (e) {
      if (e instanceof Error && (e as { status?: number }).status === 404) {
        // A thread that does not exist yet: it is created by the first message.
        this.set({ loading: false, hasOlder: false });
        this.follow(0);
        return;
      }
      this.set({ loading: false, error: e as Error });
    }
  }

  stop(): void {
    this.stopped = true;
    this.tail?.close();
    for (const t of this.typingTimers.values()) clearTimeout(t);
  }

  async loadOlder(): Promise<void> {
    if (this.state.loadingOlder || !this.state.hasOlder) return;
    const oldest = this.state.messages.find((m) => m.status === 'sent');
    if (!oldest) return;
    this.set({ loadingOlder: true });
    try {
      const page = await this.client.messages.list(this.threadId, { limit: this.pageSize, before_seq: oldest.seq });
      for (const m of page.data) if (!this.byId.has(m.id)) this.byId.set(m.id, { ...m, status: 'sent' });
      this.set({ loadingOlder: false, hasOlder: page.has_more_before });
    } catch (e) {
      this.set({ loadingOlder: false, error: e as Error });
    }
  }

  /** Shows the message at once, sends it, and swaps in the stored one (same id) when acknowledged. */
  async send(body: unknown, extra: Record<string, unknown> = {}): Promise<Message | undefined> {
    const id = typeof extra.id === 'string' ? extra.id : randomId('msg');
    const now = new Date().toISOString();
    this.byId.set(id, {
      id,
      thread_id: this.threadId,
      author: this.client.userId ?? '',
      seq: Number.MAX_SAFE_INTEGER,
      body,
      version: 1,
      created_at: now,
      edited_at: null,
      deleted: false,
      reactions: {},
      reply_to: typeof extra.reply_to === 'string' ? extra.reply_to : null,
      status: 'sending',
    });
    this.set({});
    return this.deliverSend(id, body, extra);
  }

  /** Sends a failed optimistic message again (same id: it cannot be stored twice). */
  retry(id: string): Promise<Message | undefined> {
    const m = this.byId.get(id);
    if (!m || m.status !== 'failed') return Promise.resolve(undefined);
    this.byId.set(id, { ...m, status: 'sending', error: undefined });
    this.set({});
    return this.deliverSend(id, m.body, {});
  }

  private async deliverSend(id: string, body: unknown, extra: Record<string, unknown>) {
    try {
      const stored = await this.client.messages.send(this.threadId, { ...extra, id, body });
      this.upsert(stored);
      return stored;
    } catch (e) {
      const m = this.byId.get(id);
      if (m && m.status === 'sending') this.byId.set(id, { ...m, status: 'failed', error: e as Error });
      this.set({});
      return undefined;
    }
  }

  async edit(id: string, body: unknown): Promise<void> {
    this.upsert(await this.client.messages.edit(this.threadId, id, body));
  }

  async remove(id: string): Promise<void> {
    this.upsert(await this.client.messages.delete(this.threadId, id));
  }

  async react(id: string, reaction: string, on = true): Promise<void> {
    const m = on
      ? await this.client.messages.react(this.threadId, id, reaction)
      : await this.client.messages.unreact(this.threadId, id, reaction);
    this.upsert(m);
  }

  typing(state: 'start' | 'stop' = 'start'): void {
    this.tail?.typing(state);
  }

  async markRead(): Promise<void> {
    if (this.state.lastSeq > 0) await this.client.reads.mark(this.threadId, this.state.lastSeq);
  }

  private follow(afterSeq: number): void {
    if (this.stopped) return;
    const tail = this.client.tail(this.threadId, { afterSeq });
    this.tail = tail;
    tail.on('event', (e) => this.apply(e));
    tail.on('status', (s) => this.set({ live: s.state === 'live' }));
    tail.on('presence', (p) => this.set({ online: p.online }));
    tail.on('ready', () => this.set({ online: [...tail.presence] }));
    tail.on('typing', (t) => this.setTyping(t.user_id, t.state === 'start'));
    tail.on('closed', (c) => c.error && this.set({ error: c.error, live: false }));
  }

  private apply(e: ThreadEvent): void {
    this.set({ lastSeq: Math.max(this.state.lastSeq, e.seq) });
    const id = e.message_id;
    if (!id) return;
    const current = this.byId.get(id);
    const data = e.data as { body?: unknown; version?: number; reply_to?: string };
    switch (e.type) {
      case 'message.created':
        if (e.actor) this.setTyping(e.actor, false);
        if (current?.status === 'sent') return;
        this.upsert({
          id,
          thread_id: e.thread_id,
          author: e.actor ?? '',
          seq: e.seq,
          body: data.body,
          version: data.version ?? 1,
          created_at: e.created_at,
          edited_at: null,
          deleted: false,
          reactions: current?.reactions ?? {},
          reply_to: data.reply_to ?? null,
        });
        return;
      case 'message.edited':
      case 'message.deleted':
        if (!current || current.status !== 'sent' || (data.version ?? 0) <= current.version) return;
        this.upsert({
          ...current,
          body: e.type === 'message.deleted' ? null : data.body,
          version: data.version ?? current.version + 1,
          edited_at: e.type === 'message.edited' ? e.created_at : current.edited_at,
          deleted: e.type === 'message.deleted',
        });
        return;
      case 'reaction.added':
      case 'reaction.removed':
        // Counts are not idempotent to replay: read the summary instead.
        if (current?.status === 'sent')
          this.client.messages.get(this.threadId, id).then(
            (m) => this.upsert(m),
            () => undefined,
          );
        return;
    }
  }

  private upsert(m: Message): void {
    const current = this.byId.get(m.id);
    // Never go back to an older version (a late REST answer after a newer live event).
    if (current?.status === 'sent' && current.version > m.version) return;
    this.byId.set(m.id, { ...m, status: 'sent', error: undefined });
    this.set({});
  }

  private setTyping(user: string, on: boolean): void {
    clearTimeout(this.typingTimers.get(user));
    this.typingTimers.delete(user);
    if (on)
      this.typingTimers.set(
        user,
        setTimeout(() => this.setTyping(user, false), TYPING_TTL_MS),
      );
    const typing = [...this.typingTimers.keys()].sort();
    if (typing.join('\n') !== this.state.typing.join('\n')) this.set({ typing });
  }

  private set(patch: Partial<MessagesState>): void {
    const sorted = [...this.byId.values()].sort((a, b) => a.seq - b.seq);
    const previous = this.state.messages;
    // The same list keeps its identity, so views only react to real changes.
    const same = sorted.length === previous.length && sorted.every((m, i) => m === previous[i]);
    const messages = same ? previous : sorted;
    this.state = { ...this.state, ...patch, messages };
    for (const l of [...this.listeners]) l();
  }
}
