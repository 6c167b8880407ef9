import { useEffect, useLayoutEffect, useMemo, useRef, useState } from 'react';
import { createRoot } from 'react-dom/client';
import { createFrontendClient, type Message, type ProgressDBClient } from '../../../sdk/src/index';
import {
  ProgressDBProvider,
  useMessages,
  useProgressDB,
  useThreads,
  type ChatMessage,
} from '../../../sdk/src/react/index';

interface Session {
  user_id: string;
  signature: string;
  publishable_key: string;
  api_urls: string[];
}

/** `?api=` puts one replica first (the example's tests pin each browser to a replica). */
function apiUrls(session: Session): string[] {
  const preferred = new URLSearchParams(location.search).get('api');
  return preferred ? [preferred, ...session.api_urls.filter((u) => u !== preferred)] : session.api_urls;
}

function App() {
  const [session, setSession] = useState<Session | null>(null);
  const client = useMemo<ProgressDBClient | null>(
    () =>
      session &&
      createFrontendClient({
        baseUrl: apiUrls(session),
        publishableKey: session.publishable_key,
        userId: session.user_id,
        signature: session.signature,
      }),
    [session],
  );
  if (!session || !client) return <SignIn onSession={setSession} />;
  return (
    <ProgressDBProvider client={client}>
      <Chat me={session.user_id} />
    </ProgressDBProvider>
  );
}

function SignIn({ onSession }: { onSession: (s: Session) => void }) {
  const [name, setName] = useState('');
  const [error, setError] = useState('');
  async function submit(e: React.FormEvent) {
    e.preventDefault();
    setError('');
    const res = await fetch('/api/session', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ user_id: name.trim().toLowerCase() }),
    });
    const body = (await res.json()) as Session & { error?: string };
    if (!res.ok) return setError(body.error ?? `HTTP ${res.status}`);
    onSession(body);
  }
  return (
    <form className="signin" onSubmit={(e) => void submit(e)}>
      <h1>ProgressDB chat</h1>
      <label htmlFor="user">Sign in as</label>
      <input id="user" data-testid="user-id" value={name} onChange={(e) => setName(e.target.value)} autoFocus />
      <button data-testid="sign-in" type="submit">
        Sign in
      </button>
      {error && <p role="alert">{error}</p>}
    </form>
  );
}

function Chat({ me }: { me: string }) {
  // Most recent activity first: a thread with a new message moves to the top.
  const { threads, refresh } = useThreads({ refreshIntervalMs: 1500, sort: 'last_activity' });
  const [current, setCurrent] = useState('general');
  return (
    <div className="app">
      <nav className="sidebar">
        <div className="me" data-testid="me">
          {me}
        </div>
        {threads.map((t) => (
          <button
            key={t.id}
            data-testid={`thread-${t.id}`}
            className={`thread ${t.id === current ? 'active' : ''}`}
            onClick={() => setCurrent(t.id)}
          >
            <span>{t.title ?? t.id}</span>
            {t.id !== current && (t.unread ?? 0) > 0 && (
              <span className="badge" data-testid={`unread-${t.id}`}>
                {t.unread}
              </span>
            )}
          </button>
        ))}
      </nav>
      <ThreadView key={current} threadId={current} me={me} onRead={() => void refresh()} />
    </div>
  );
}

const text = (m: Message) =>
  m.deleted
    ? '(deleted)'
    : typeof (m.body as { text?: unknown })?.text === 'string'
      ? (m.body as { text: string }).text
      : JSON.stringify(m.body);

/** The parent's first words, for a reply's quote and the composer's "Replying to". */
function snippet(m: Message, words = 8): string {
  const all = text(m).split(/\s+/).filter(Boolean);
  let head = all.slice(0, words).join(' ');
  if (head.length > 60) head = head.slice(0, 60);
  return head.length < all.join(' ').length ? `${head}…` : head;
}

type Actions = Pick<ReturnType<typeof useMessages>, 'edit' | 'react' | 'retry'>;

function ThreadView({ threadId, me, onRead }: { threadId: string; me: string; onRead: () => void }) {
  const client = useProgressDB();
  const m = useMessages(threadId, { pageSize: 30 });
  const list = useRef<HTMLDivElement>(null);
  const composer = useRef<HTMLInputElement>(null);
  const anchor = useRef<{ height: number; top: number; firstId: string | undefined } | null>(null);
  const stick = useRef(true);
  /** A message to bring into view once it is rendered (a reply's parent being jumped to). */
  const pendingScroll = useRef<string | null>(null);
  const [draft, setDraft] = useState('');
  const [replyingTo, setReplyingTo] = useState<ChatMessage | null>(null);
  const [highlight, setHighlight] = useState<{ id: string; n: number } | null>(null);
  const newest = m.messages.at(-1);

  // Quotes need their parent: from the loaded messages, else read once (null: not readable).
  const loaded = useMemo(() => new Map(m.messages.map((x) => [x.id, x])), [m.messages]);
  const [fetched, setFetched] = useState<Record<string, Message | null>>({});
  const requested = useRef(new Set<string>());
  useEffect(() => {
    for (const { reply_to: id } of m.messages) {
      if (!id || loaded.has(id) || requested.current.has(id)) continue;
      requested.current.add(id);
      client.messages.get(threadId, id).then(
        (parent) => setFetched((f) => ({ ...f, [id]: parent })),
        () => setFetched((f) => ({ ...f, [id]: null })),
      );
    }
  }, [m.messages, loaded, client, threadId]);
  const parentOf = (id: string): Message | null | undefined => loaded.get(id) ?? fetched[id];

  const firstId = m.messages[0]?.id;
  useLayoutEffect(() => {
    const el = list.current;
    if (!el) return;
    const target = pendingScroll.current;
    const row = target ? el.querySelector(`[data-message-id="${CSS.escape(target)}"]`) : null;
    if (row) {
      // Centre the jumped-to message in the list (not scrollIntoView: it scrolls the page too).
      pendingScroll.current = null;
      anchor.current = null;
      const offset = row.getBoundingClientRect().top - el.getBoundingClientRect().top;
      el.scrollTop += offset - (el.clientHeight - row.clientHeight) / 2;
    } else if (anchor.current && firstId !== anchor.current.firstId) {
      // Infinite scroll up: keep the view still while older messages are prepended.
      el.scrollTop = el.scrollHeight - anchor.current.height + anchor.current.top;
      anchor.current = null;
    } else if (stick.current && !anchor.current && !m.hasNewer) el.scrollTop = el.scrollHeight;
  }, [m.messages, firstId, highlight, m.hasNewer]);

  useEffect(() => {
    if (!newest || newest.status !== 'sent' || document.visibilityState !== 'visible') return;
    void m.markRead().then(onRead);
    // Marks when the newest stored message changes, not on every render.
  }, [newest?.id, newest?.status]);

  function onScroll() {
    const el = list.current!;
    const fromBottom = el.scrollHeight - el.scrollTop - el.clientHeight;
    stick.current = !m.hasNewer && fromBottom < 40;
    if (el.scrollTop < 60 && m.hasOlder && !m.loadingOlder) {
      anchor.current = { height: el.scrollHeight, top: el.scrollTop, firstId: m.messages[0]?.id };
      void m.loadOlder();
    }
    // After a jump the list is a stretch of the past: scrolling down pages towards the newest.
    if (fromBottom < 60 && m.hasNewer && !m.loadingNewer) void m.loadNewer();
  }

  /** Clicking a quote: highlight the parent, loading the page around it if it is not loaded. */
  function jumpToParent(parent: Message) {
    setHighlight((h) => ({ id: parent.id, n: (h?.n ?? 0) + 1 }));
    pendingScroll.current = parent.id;
    stick.current = false;
    anchor.current = null;
    if (loaded.has(parent.id)) return;
    void m.jumpTo(parent.seq).then(() =>
      // Nothing to scroll to if the page did not contain it (deleted meanwhile).
      requestAnimationFrame(() => {
        if (pendingScroll.current === parent.id) pendingScroll.current = null;
      }),
    );
  }

  function submit(e: React.FormEvent) {
    e.preventDefault();
    const value = draft.trim();
    if (!value) return;
    setDraft('');
    stick.current = true;
    m.setTyping('stop');
    if (replyingTo) void m.reply(replyingTo.id, { text: value });
    else void m.send({ text: value });
    setReplyingTo(null);
  }

  const others = m.online.filter((u) => u !== me);
  return (
    <main className="main">
      <div className="header">
        # {threadId}
        <span className="online" data-testid="online">
          {others.length ? `online: ${others.join(', ')}` : ''}
        </span>
      </div>
      <div className="messages" ref={list} onScroll={onScroll} data-testid="messages">
        {m.hasOlder && <div className="older">{m.loadingOlder ? 'Loading…' : '↑ older messages'}</div>}
        {m.messages.map((msg) => (
          <MessageRow
            key={msg.id}
            msg={msg}
            mine={msg.author === me}
            actions={m}
            parent={msg.reply_to ? parentOf(msg.reply_to) : undefined}
            highlight={highlight?.id === msg.id ? highlight.n : 0}
            onQuote={jumpToParent}
            onReply={(target) => {
              setReplyingTo(target);
              composer.current?.focus();
            }}
          />
        ))}
      </div>
      {m.hasNewer && (
        <button
          className="newer"
          data-testid="jump-latest"
          onClick={() => {
            stick.current = true;
            pendingScroll.current = null;
            void m.jumpToLatest();
          }}
        >
          {m.loadingNewer ? 'Loading…' : '↓ newer messages: jump to the latest'}
        </button>
      )}
      <div className="typing" data-testid="typing">
        {m.typing.filter((u) => u !== me).length > 0 && `${m.typing.filter((u) => u !== me).join(', ')} is typing…`}
      </div>
      {replyingTo && (
        <div className="replying" data-testid="replying-to">
          <span>
            Replying to <b>{replyingTo.author}</b>: {snippet(replyingTo)}
          </span>
          <button type="button" data-testid="cancel-reply" title="cancel the reply" onClick={() => setReplyingTo(null)}>
            ×
          </button>
        </div>
      )}
      <form className="composer" onSubmit={submit}>
        <input
          ref={composer}
          data-testid="composer"
          value={draft}
          placeholder={replyingTo ? `Reply to ${replyingTo.author}` : `Message #${threadId}`}
          onChange={(e) => {
            setDraft(e.target.value);
            if (e.target.value) m.setTyping('start');
          }}
        />
        <button type="submit" data-testid="send">
          Send
        </button>
      </form>
    </main>
  );
}

function MessageRow({
  msg,
  mine,
  actions,
  parent,
  highlight,
  onQuote,
  onReply,
}: {
  msg: ChatMessage;
  mine: boolean;
  actions: Actions;
  /** A reply's parent: undefined while it is read, null if it cannot be. */
  parent: Message | null | undefined;
  /** Non-zero while this message is the jumped-to one (each jump a new number, to flash again). */
  highlight: number;
  onQuote: (parent: Message) => void;
  onReply: (msg: ChatMessage) => void;
}) {
  const [editing, setEditing] = useState<string | null>(null);
  const hearts = msg.reactions.heart ?? 0;
  return (
    <div
      className={`message ${mine ? 'mine' : ''} ${highlight ? `flash-${highlight % 2}` : ''}`}
      data-testid="message"
      data-message-id={msg.id}
      data-status={msg.status}
      data-author={msg.author}
      data-highlighted={highlight ? 'true' : undefined}
    >
      <div className="author">{msg.author}</div>
      {msg.reply_to && (
        <button
          className="quote"
          data-testid="quote"
          disabled={!parent || parent.deleted}
          title={parent && !parent.deleted ? 'show the message replied to' : undefined}
          onClick={() => parent && onQuote(parent)}
        >
          {parent ? (
            <>
              <span className="quote-author">{parent.author}</span>
              <span data-testid="quote-text">{parent.deleted ? '(deleted)' : snippet(parent)}</span>
            </>
          ) : parent === null ? (
            'original message unavailable'
          ) : (
            '…'
          )}
        </button>
      )}
      {editing === null ? (
        <div>
          <span data-testid="text">{text(msg)}</span>
          {msg.edited_at && (
            <span className="edited" data-testid="edited">
              edited
            </span>
          )}
        </div>
      ) : (
        <form
          onSubmit={(e) => {
            e.preventDefault();
            void actions.edit(msg.id, { text: editing }).then(() => setEditing(null));
          }}
        >
          <input data-testid="edit-input" value={editing} onChange={(e) => setEditing(e.target.value)} autoFocus />
        </form>
      )}
      {msg.status === 'sent' && !msg.deleted && (
        <div className="actions">
          <button data-testid="react" title="heart" onClick={() => void actions.react(msg.id, 'heart', true)}>
            ♥ {hearts > 0 ? hearts : ''}
          </button>
          <button data-testid="reply" onClick={() => onReply(msg)}>
            Reply
          </button>
          {mine && editing === null && (
            <button data-testid="edit" onClick={() => setEditing(text(msg))}>
              Edit
            </button>
          )}
        </div>
      )}
      {msg.status === 'failed' && (
        <button data-testid="retry" onClick={() => void actions.retry(msg.id)}>
          Not sent: retry
        </button>
      )}
    </div>
  );
}

createRoot(document.getElementById('root')!).render(<App />);
