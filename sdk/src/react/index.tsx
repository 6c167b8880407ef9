import { createContext, useCallback, useContext, useEffect, useMemo, useState, useSyncExternalStore } from 'react';
import type { ReactNode } from 'react';
import type { Message, ProgressDBClient, Thread } from '../client';
import { MessagesStore, type ChatMessage, type MessagesState } from './messages-store';

export { MessagesStore, type ChatMessage, type MessagesState };

const ClientContext = createContext<ProgressDBClient | null>(null);

/** Makes a client (usually a frontend client acting as the signed-in user) available to the hooks. */
export function ProgressDBProvider({ client, children }: { client: ProgressDBClient; children?: ReactNode }) {
  useEffect(() => () => client.close(), [client]);
  return <ClientContext.Provider value={client}>{children}</ClientContext.Provider>;
}

export function useProgressDB(): ProgressDBClient {
  const client = useContext(ClientContext);
  if (!client) throw new Error('useProgressDB: wrap your components in <ProgressDBProvider client={…}>');
  return client;
}

export interface UseThreadsResult {
  /** The user's threads, most recent activity (or, with `sort: 'created'`, creation) first, each with `unread`. */
  threads: Thread[];
  loading: boolean;
  error: Error | undefined;
  hasMore: boolean;
  loadMore(): Promise<void>;
  /** Re-reads the first page (and unread counts). */
  refresh(): Promise<void>;
}

/**
 * The signed-in user's threads with unread counts; `refreshIntervalMs` re-reads them
 * periodically; `sort`: `last_activity` (default) or `created`.
 */
export function useThreads(
  options: { pageSize?: number; refreshIntervalMs?: number; sort?: 'last_activity' | 'created' } = {},
): UseThreadsResult {
  const client = useProgressDB();
  const { pageSize = 50, refreshIntervalMs, sort = 'last_activity' } = options;
  const [state, setState] = useState<{ threads: Thread[]; cursor: string | null; loading: boolean; error?: Error }>({
    threads: [],
    cursor: null,
    loading: true,
  });

  const refresh = useCallback(async () => {
    try {
      const page = await client.threads.list({ limit: pageSize, sort });
      setState((s) => {
        // Keep pages loaded beyond the first; the first page's rows win.
        const fresh = new Set(page.data.map((t) => t.id));
        const rest = s.threads.slice(pageSize).filter((t) => !fresh.has(t.id));
        return { threads: [...page.data, ...rest], cursor: s.cursor ?? page.next_cursor, loading: false };
      });
    } catch (e) {
      setState((s) => ({ ...s, loading: false, error: e as Error }));
    }
  }, [client, pageSize, sort]);

  const loadMore = useCallback(async () => {
    if (!state.cursor) return;
    const page = await client.threads.list({ limit: pageSize, cursor: state.cursor, sort });
    setState((s) => {
      const seen = new Set(s.threads.map((t) => t.id));
      return { ...s, threads: [...s.threads, ...page.data.filter((t) => !seen.has(t.id))], cursor: page.next_cursor };
    });
  }, [client, pageSize, sort, state.cursor]);

  useEffect(() => {
    void refresh();
    if (!refreshIntervalMs) return;
    const timer = setInterval(() => void refresh(), refreshIntervalMs);
    return () => clearInterval(timer);
  }, [refresh, refreshIntervalMs]);

  return {
    threads: state.threads,
    loading: state.loading,
    error: state.error,
    hasMore: state.cursor !== null,
    loadMore,
    refresh,
  };
}

export interface UseMessagesResult extends MessagesState {
  /** Loads the page before the oldest loaded message (for infinite scroll up). */
  loadOlder(): Promise<void>;
  /** After jumpTo: loads the page after the newest loaded message (scrolling down). */
  loadNewer(): Promise<void>;
  /** Shows the page around a seq (`messages.around`), e.g. a reply's parent; nothing if it is loaded. */
  jumpTo(seq: number): Promise<void>;
  /** Back to the newest messages after jumpTo. */
  jumpToLatest(): Promise<void>;
  /** Optimistic: the message shows at once with status `sending`, then becomes the stored one. */
  send(body: unknown, extra?: Record<string, unknown>): Promise<Message | undefined>;
  /** An optimistic reply to `parentId` (`messages.reply`). */
  reply(parentId: string, body: unknown, extra?: Record<string, unknown>): Promise<Message | undefined>;
  retry(id: string): Promise<Message | undefined>;
  edit(id: string, body: unknown): Promise<void>;
  remove(id: string): Promise<void>;
  react(id: string, reaction: string, on?: boolean): Promise<void>;
  /** Tells others you are typing (throttled by the service). */
  setTyping(state?: 'start' | 'stop'): void;
  /** Marks everything loaded so far as read. */
  markRead(): Promise<void>;
}

/** A thread's messages: the newest page, older pages on demand, live updates and optimistic sends. */
export function useMessages(threadId: string, options: { pageSize?: number } = {}): UseMessagesResult {
  const client = useProgressDB();
  const store = useMemo(
    () => new MessagesStore(client, threadId, options.pageSize),
    [client, threadId, options.pageSize],
  );
  useEffect(() => {
    void store.start();
    return () => store.stop();
  }, [store]);
  const state = useSyncExternalStore(store.subscribe, store.getState, store.getState);
  return useMemo(
    () => ({
      ...state,
      loadOlder: () => store.loadOlder(),
      loadNewer: () => store.loadNewer(),
      jumpTo: (seq: number) => store.jumpTo(seq),
      jumpToLatest: () => store.jumpToLatest(),
      send: (body: unknown, extra?: Record<string, unknown>) => store.send(body, extra),
      reply: (parentId: string, body: unknown, extra?: Record<string, unknown>) => store.reply(parentId, body, extra),
      retry: (id: string) => store.retry(id),
      edit: (id: string, body: unknown) => store.edit(id, body),
      remove: (id: string) => store.remove(id),
      react: (id: string, reaction: string, on?: boolean) => store.react(id, reaction, on),
      setTyping: (s?: 'start' | 'stop') => store.typing(s),
      markRead: () => store.markRead(),
    }),
    [state, store],
  );
}
