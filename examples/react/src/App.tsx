// A page for one draft of examples/own_app.py: its progress, its reply token by token, and an
// Approve button. It holds no API key: its backend mints a token for this draft only.
import { useMemo, useState, type FormEvent } from "react";
import {
  WorkflowClient,
  WorkflowCommError,
  useWorkflowEvents,
  useWorkflowStatus,
  useWorkflowStream,
} from "./workflow-hooks";

// The names examples/own_app.py's workflow uses.
const STREAM_TOKENS = "tokens";
const EVENT_PROGRESS = "progress";
const EVENT_STAGE = "stage";
const TOPIC_APPROVAL = "approval";
const STAGE_WAITING = "waiting_for_approval";
// Fetch a fresh token this long before the current one expires.
const REFRESH_MS = 60_000;

const draftPath = (draftId: string) => `/drafts/${encodeURIComponent(draftId)}`;

/**
 * The client's credential: a read+send token for this draft from our backend, minted again
 * shortly before it expires. The client calls it before every request and every reconnect.
 */
function draftToken(draftId: string): () => Promise<string> {
  let minted: Promise<{ token: string; expiresAt: number }> | null = null;
  const mint = async () => {
    const response = await fetch(`${draftPath(draftId)}/token`, { method: "POST" });
    const body = await response.json().catch(() => null);
    if (!response.ok) {
      const detail = body?.detail ?? null;
      throw new WorkflowCommError(response.status, detail, `No token: ${detail ?? response.status}`);
    }
    return { token: body.token as string, expiresAt: Date.parse(body.expires_at) };
  };
  return async () => {
    if (minted === null || (await minted).expiresAt - Date.now() < REFRESH_MS) {
      const attempt = mint();
      minted = attempt;
      attempt.catch(() => {
        if (minted === attempt) minted = null; // failed: the next call asks again
      });
    }
    return (await minted).token;
  };
}

export function App() {
  const [draftId, setDraftId] = useState(() => new URLSearchParams(location.search).get("draft"));
  const started = (id: string) => {
    history.pushState(null, "", `?draft=${encodeURIComponent(id)}`);
    setDraftId(id);
  };
  return draftId ? <Draft key={draftId} draftId={draftId} /> : <StartDraft onStarted={started} />;
}

function StartDraft({ onStarted }: { onStarted: (draftId: string) => void }) {
  const [prompt, setPrompt] = useState("durable workflows");
  const [error, setError] = useState("");
  async function start(event: FormEvent) {
    event.preventDefault();
    const draftId = `draft-${Math.random().toString(36).slice(2, 10)}`;
    const query = new URLSearchParams({ prompt });
    const response = await fetch(`${draftPath(draftId)}?${query}`, { method: "POST" });
    if (response.ok) onStarted(draftId);
    else setError(`Could not start a draft: HTTP ${response.status}`);
  }
  return (
    <main>
      <h1>Drafting assistant</h1>
      <form onSubmit={start}>
        <label htmlFor="prompt">What should the reply be about?</label>
        <input id="prompt" value={prompt} onChange={(e) => setPrompt(e.target.value)} required />
        <button type="submit">Draft a reply</button>
      </form>
      {error && <p role="alert">{error}</p>}
    </main>
  );
}

function Draft({ draftId }: { draftId: string }) {
  const client = useMemo(() => new WorkflowClient({ token: draftToken(draftId) }), [draftId]);
  const stream = useWorkflowStream<string>(client, draftId, STREAM_TOKENS);
  const { events, ...watch } = useWorkflowEvents(client, draftId);
  const { workflow, ...status } = useWorkflowStatus(client, draftId);
  const [sent, setSent] = useState(false);
  const [sendError, setSendError] = useState<Error | null>(null);

  const progress = Number(events[EVENT_PROGRESS] ?? 0);
  const stage = events[EVENT_STAGE];
  const outcome = (workflow?.result as { outcome?: string } | null)?.outcome;
  const errors = [stream.error, watch.error, status.error, sendError].filter((e) => e !== null);

  async function decide(approved: boolean) {
    setSent(true);
    try {
      // One decision per draft: a retry with this key is dropped by the server.
      const idempotencyKey = `decision-${draftId}`;
      await client.send(draftId, { approved }, { topic: TOPIC_APPROVAL, idempotencyKey });
    } catch (error) {
      setSendError(error as Error);
      setSent(false);
    }
  }

  return (
    <main>
      <h1>Draft {draftId}</h1>
      <label htmlFor="progress">Progress</label>
      <progress id="progress" value={progress} max={100} />
      <output htmlFor="progress" data-testid="progress">{progress}%</output>
      <p>
        Stage: <output data-testid="stage">{String(stage ?? "")}</output> · Status:{" "}
        <output data-testid="status">{workflow?.status ?? ""}</output>
        {outcome && <> · Outcome: <output data-testid="outcome">{outcome}</output></>}
      </p>
      <p className="tokens" aria-label="Reply" aria-live="polite" data-state={stream.state}>
        {stream.values.map((token, offset) => (
          <span key={offset} data-offset={offset}>
            {token}
          </span>
        ))}
      </p>
      <button onClick={() => decide(true)} disabled={stage !== STAGE_WAITING || sent}>
        Approve
      </button>
      <button onClick={() => decide(false)} disabled={stage !== STAGE_WAITING || sent}>
        Reject
      </button>
      {errors.map((error, i) => (
        <p role="alert" key={i}>
          {error.message}
        </p>
      ))}
    </main>
  );
}
