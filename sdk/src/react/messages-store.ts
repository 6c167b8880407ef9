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
  /**
   * Ascending by seq; optimistic messages last, in the order sent. A contiguous stretch of the
   * thread: the newest messages, or (after jumpTo) the page around a message and what was paged
   * on from it.
   */
  messages: ChatMessage[];
  loading: boolean;
  loadingOlder: boolean;
  hasOlder: boolean;
  loadingNewer: boolean;
  /** After jumpTo: newer messages exist than the loaded ones (loadNewer / jumpToLatest). */
  hasNewer: boolean;
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
    loadingNewer: false,
    hasNewer: false,
    error: undefined,
    typing: [],
    online: [],
    live: false,
    lastSeq: 0,
  };
  private readonly byId = new Map<string, ChatMessage>();
  /**
   * While the view is away from the newest messages (hasNewer): messages known to be newer than
   * it (live ones, or the stretch left by a jump), joined to the view when paging reaches them.
   */
  private readonly beyond = new Map<string, ChatMessage>();
  /** Bumped whenever the loaded stretch is replaced: late pages of the previous one are dropped. */
  private generation = 0;
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
    const generation = this.generation;
    this.set({ loadingOlder: true });
    try {
      const page = await this.client.messages.list(this.threadId, { limit: this.pageSize, beforeSeq: oldest.seq });
      if (generation !== this.generation) return;
      for (const m of page.data) if (!this.byId.has(m.id)) this.byId.set(m.id, { ...m, status: 'sent' });
      this.set({ loadingOlder: false, hasOlder: page.has_more_before });
    } catch (e) {
      if (generation === this.generation) this.set({ loadingOlder: false, error: e as Error });
    }
  }

  /** After jumpTo: the page after the newest loaded message; reaching the end shows live messages again. */
  async loadNewer(): Promise<void> {
    if (this.state.loadingNewer || !this.state.hasNewer) return;
    const newest = this.newestSent();
    const generation = this.generation;
    this.set({ loadingNewer: true });
    try {
      const page = await this.client.messages.list(this.threadId, { limit: this.pageSize, afterSeq: newest });
      if (generation !== this.generation) return;
      for (const m of page.data) if (!this.byId.has(m.id)) this.byId.set(m.id, this.freshest(m));
      if (!page.has_more_after) this.joinBeyond();
      this.set({ loadingNewer: false, hasNewer: page.has_more_after });
    } catch (e) {
      if (generation === this.generation) this.set({ loadingNewer: false, error: e as Error });
    }
  }

  /**
   * Shows the page around `seq` (a reply's parent, a search hit): `messages.around`. Nothing to
   * load when it is within the loaded stretch. Page on with loadOlder / loadNewer.
   */
  async jumpTo(seq: number): Promise<void> {
    const sent = this.state.messages.filter((m) => m.status === 'sent');
    if (sent.length && sent[0].seq <= seq && seq <= sent[sent.length - 1].seq) return;
    const generation = ++this.generation;
    try {
      const page = await this.client.messages.around(this.threadId, seq, { limit: this.pageSize });
      if (generation === this.generation && !this.stopped) this.replaceLoaded(page);
    } catch (e) {
      if (generation === this.generation) this.set({ error: e as Error });
    }
  }

  /** Back to the newest page (and live messages) after jumpTo. */
  async jumpToLatest(): Promise<void> {
    if (!this.state.hasNewer) return;
    const generation = ++this.generation;
    try {
      const page = await this.client.messages.list(this.threadId, { limit: this.pageSize });
      if (generation === this.generation && !this.stopped) this.replaceLoaded(page);
    } catch (e) {
      if (generation === this.generation) this.set({ error: e as Error });
    }
  }

  /** A reply to `parentId` (a message of this thread), optimistic like send. */
  reply(parentId: string, body: unknown, extra: Record<string, unknown> = {}): Promise<Message | undefined> {
    return this.send(body, { ...extra, replyTo: parentId });
  }

  /**
   * Shows the message at once, sends it, and swaps in the stored one (same id) when acknowledged.
   * `extra.replyTo` (or `reply_to`) makes it a reply. Sent while away from the newest messages,
   * it brings the view back to them.
   */
  async send(body: unknown, extra: Record<string, unknown> = {}): Promise<Message | undefined> {
    const id = typeof extra.id === 'string' ? extra.id : randomId('msg');
    const { replyTo: camel, reply_to: snake, ...rest } = extra;
    const replyTo = typeof camel === 'string' ? camel : typeof snake === 'string' ? snake : null;
    if (this.state.hasNewer) void this.jumpToLatest();
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
      reply_to: replyTo,
      status: 'sending',
    });
    this.set({});
    return this.deliverSend(id, body, replyTo, rest);
  }

  /** Sends a failed optimistic message again (same id: it cannot be stored twice). */
  retry(id: string): Promise<Message | undefined> {
    const m = this.byId.get(id);
    if (!m || m.status !== 'failed') return Promise.resolve(undefined);
    this.byId.set(id, { ...m, status: 'sending', error: undefined });
    this.set({});
    return this.deliverSend(id, m.body, m.reply_to, {});
  }

  private async deliverSend(id: string, body: unknown, replyTo: string | null, extra: Record<string, unknown>) {
    try {
      const message = { ...extra, id, body };
      const stored = replyTo
        ? await this.client.messages.reply(this.threadId, replyTo, message)
        : await this.client.messages.send(this.threadId, message);
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
    const current = this.byId.get(id) ?? this.beyond.get(id);
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
    const current = this.byId.get(m.id) ?? this.beyond.get(m.id);
    // Never go back to an older version (a late REST answer after a newer live event).
    if (current?.status === 'sent' && current.version > m.version) return;
    // A message new to the store, while the view is away from the newest, waits beyond it.
    const into = this.byId.has(m.id) || (!this.beyond.has(m.id) && !this.state.hasNewer) ? this.byId : this.beyond;
    into.set(m.id, { ...m, status: 'sent', error: undefined });
    this.set({});
  }

  private newestSent(): number {
    let newest = 0;
    for (const m of this.byId.values()) if (m.status === 'sent') newest = Math.max(newest, m.seq);
    return newest;
  }

  /** A fetched message, unless a live event already brought a newer version of it. */
  private freshest(m: Message): ChatMessage {
    const known = this.byId.get(m.id) ?? this.beyond.get(m.id);
    return known?.status === 'sent' && known.version > m.version ? known : { ...m, status: 'sent' };
  }

  /** The loaded stretch reached the newest page: what waited beyond it joins (once, by id). */
  private joinBeyond(): void {
    const newest = this.newestSent();
    for (const m of this.beyond.values()) if (m.seq > newest && !this.byId.has(m.id)) this.byId.set(m.id, m);
    this.beyond.clear();
  }

  /** Replaces the loaded stretch with a page (around a seq, or the newest), keeping unsent messages. */
  private replaceLoaded(page: { data: Message[]; has_more_before: boolean; has_more_after: boolean }): void {
    const known = [...this.byId.values(), ...this.beyond.values()];
    const fresh = page.data.map((m) => this.freshest(m));
    const end = page.data.length ? page.data[page.data.length - 1].seq : 0;
    this.byId.clear();
    this.beyond.clear();
    for (const m of fresh) this.byId.set(m.id, m);
    for (const m of known) {
      if (m.status !== 'sent') this.byId.set(m.id, m);
      else if (m.seq > end && !this.byId.has(m.id)) (page.has_more_after ? this.beyond : this.byId).set(m.id, m);
    }
    this.set({
      hasOlder: page.has_more_before,
      hasNewer: page.has_more_after,
      loadingOlder: false,
      loadingNewer: false,
    });
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
