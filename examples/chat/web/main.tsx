import { useEffect, useLayoutEffect, useMemo, useRef, useState } from 'react';
import { createRoot } from 'react-dom/client';
import { createFrontendClient, type ProgressDBClient } from '../../../sdk/src/index';
import { ProgressDBProvider, useMessages, useThreads, type ChatMessage } from '../../../sdk/src/react/index';

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
  const { threads, refresh } = useThreads({ refreshIntervalMs: 1500 });
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

const text = (m: ChatMessage) =>
  m.deleted
    ? '(deleted)'
    : typeof (m.body as { text?: unknown })?.text === 'string'
      ? (m.body as { text: string }).text
      : JSON.stringify(m.body);

function ThreadView({ threadId, me, onRead }: { threadId: string; me: string; onRead: () => void }) {
  const m = useMessages(threadId, { pageSize: 30 });
  const list = useRef<HTMLDivElement>(null);
  const anchor = useRef<{ height: number; top: number; firstId: string | undefined } | null>(null);
  const stick = useRef(true);
  const [draft, setDraft] = useState('');
  const newest = m.messages.at(-1);

  const firstId = m.messages[0]?.id;
  // Infinite scroll up: keep the view still while older messages are prepended.
  useLayoutEffect(() => {
    const el = list.current;
    if (!el) return;
    if (anchor.current && firstId !== anchor.current.firstId) {
      el.scrollTop = el.scrollHeight - anchor.current.height + anchor.current.top;
      anchor.current = null;
    } else if (stick.current && !anchor.current) el.scrollTop = el.scrollHeight;
  }, [m.messages, firstId]);

  useEffect(() => {
    if (!newest || newest.status !== 'sent' || document.visibilityState !== 'visible') return;
    void m.markRead().then(onRead);
    // Marks when the newest stored message changes, not on every render.
  }, [newest?.id, newest?.status]);

  function onScroll() {
    const el = list.current!;
    stick.current = el.scrollHeight - el.scrollTop - el.clientHeight < 40;
    if (el.scrollTop < 60 && m.hasOlder && !m.loadingOlder) {
      anchor.current = { height: el.scrollHeight, top: el.scrollTop, firstId: m.messages[0]?.id };
      void m.loadOlder();
    }
  }

  function submit(e: React.FormEvent) {
    e.preventDefault();
    const value = draft.trim();
    if (!value) return;
    setDraft('');
    stick.current = true;
    m.setTyping('stop');
    void m.send({ text: value });
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
          <MessageRow key={msg.id} msg={msg} mine={msg.author === me} actions={m} />
        ))}
      </div>
      <div className="typing" data-testid="typing">
        {m.typing.filter((u) => u !== me).length > 0 && `${m.typing.filter((u) => u !== me).join(', ')} is typing…`}
      </div>
      <form className="composer" onSubmit={submit}>
        <input
          data-testid="composer"
          value={draft}
          placeholder={`Message #${threadId}`}
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
}: {
  msg: ChatMessage;
  mine: boolean;
  actions: Pick<ReturnType<typeof useMessages>, 'edit' | 'react' | 'retry'>;
}) {
  const [editing, setEditing] = useState<string | null>(null);
  const hearts = msg.reactions.heart ?? 0;
  return (
    <div
      className={`message ${mine ? 'mine' : ''}`}
      data-testid="message"
      data-message-id={msg.id}
      data-status={msg.status}
      data-author={msg.author}
    >
      <div className="author">{msg.author}</div>
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
