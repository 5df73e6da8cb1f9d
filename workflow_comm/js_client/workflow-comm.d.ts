// Types of workflow-comm.js, the browser client of the DBOS workflow communication server.
// Served at /client/workflow-comm.d.ts, beside /client/workflow-comm.js.

/** A key or token, or a function giving one (called before every request and (re)connect). */
export type Credential =
  | string
  | null
  | undefined
  | (() => string | null | undefined | Promise<string | null | undefined>);

export interface ClientOptions {
  /** The server, e.g. "https://comm.example.com"; default: this page's origin. */
  baseUrl?: string;
  /** A token from POST /tokens (scoped to one workflow or an ID prefix). */
  token?: Credential;
  /** An API key (COMM_API_KEYS); a page should rather hold a token. */
  apiKey?: Credential;
}

/** A workflow, as `GET /workflows/{id}` shows it. */
export interface Workflow {
  workflow_id: string;
  /** "events", "messaging" or "streaming" for the demo's workflows; null for any other. */
  kind: string | null;
  status:
    | "PENDING"
    | "ENQUEUED"
    | "DELAYED"
    | "SUCCESS"
    | "ERROR"
    | "CANCELLED"
    | "MAX_RECOVERY_ATTEMPTS_EXCEEDED";
  name: string;
  /** Unix epoch milliseconds. */
  created_at: number | null;
  updated_at: number | null;
  completed_at: number | null;
  executor_id: string | null;
  application_version: string | null;
  application_name: string | null;
  result: unknown;
  error: string | null;
}

/** One change of an event: its key, its new value and the workflow's event version. */
export interface EventChange {
  key: string;
  value: unknown;
  version: number;
}

/** A stream's end: no value will follow `next_offset`. */
export interface StreamEnd {
  workflow_id: string;
  key: string;
  status: string;
  next_offset: number;
}

export interface StreamInfo {
  key: string;
  /** Values written so far (offsets 0 to length - 1). */
  length: number;
  closed: boolean;
}

export interface MessageSent {
  workflow_id: string;
  message: string;
  payload: Record<string, unknown>;
  topic: string;
  idempotency_key: string | null;
}

/**
 * connecting: the first connection is being made; open: connected, values arrive;
 * reconnecting: the connection dropped, a new one is on its way; ended: the server said
 * nothing more will come; closed: close() was called; failed: refused for good (onError).
 */
export type LiveState = "connecting" | "open" | "reconnecting" | "ended" | "closed" | "failed";

export interface LiveOptions {
  /** Told every change of the feed's state. */
  onState?: (state: LiveState) => void;
  /**
   * A connection failed. With `retrying` it is tried again (server away, 5xx); otherwise
   * (401, 403, 404, 422) the feed has failed and stays so until reconnect().
   */
  onError?: (error: WorkflowCommError, info: { retrying: boolean }) => void;
}

export interface FollowStreamOptions extends LiveOptions {
  /** The stream's key; server default "progress_stream". */
  key?: string;
  /** The first offset to deliver; default 0. */
  offset?: number;
  /** Each value, in offset order, exactly once. */
  onValue: (value: any, offset: number) => void;
  /** The stream was closed, or its workflow ended. */
  onClose?: (end: StreamEnd) => void;
}

export interface WatchEventsOptions extends LiveOptions {
  /** The current value of each key, then every change; never an older value of a key. */
  onEvent: (change: EventChange) => void;
  /** The workflow ended and every change was delivered. */
  onClose?: (end: { workflow_id: string; status: string }) => void;
}

export interface WatchStatusOptions extends LiveOptions {
  /** The status now, at every change, and the final one (with `result` or `error`). */
  onStatus: (workflow: Workflow) => void;
  /** The workflow ended; its final status. */
  onClose?: (workflow: Workflow) => void;
}

/** One entry of a workflow's timeline (GET /workflows/{id}/timeline); `type` says which
 * other fields it has. */
export interface TimelineEntry {
  type: string;
  at: number | null;
  id: string;
  [field: string]: unknown;
}

export interface WatchTimelineOptions extends LiveOptions {
  /** Each timeline entry, once, in order; then each new one as it is recorded. */
  onEntry: (entry: TimelineEntry) => void;
  /** The workflow ended; its final status. */
  onClose?: (end: { workflow_id: string; status: string }) => void;
}

export interface WorkflowFilters {
  status?: string;
  kind?: string;
  app?: string;
}

export interface WatchWorkflowsOptions extends LiveOptions, WorkflowFilters {
  /** A workflow started, or a status changed. */
  onWorkflow: (workflow: Workflow) => void;
}

/** A request the server refused (`status`, its `detail`), or could not send (status 0). */
export class WorkflowCommError extends Error {
  constructor(status: number, detail: unknown, message: string);
  readonly status: number;
  /** The server's `detail`: a string, or a list of field errors for a 422; null if none. */
  readonly detail: unknown;
}

/** A live feed: values arrive through its callbacks until the server ends it or close(). */
export class LiveHandle {
  /** Made by the client's live methods only. */
  protected constructor();
  /** The feed's state now. */
  readonly state: LiveState;
  /** Stop the feed: no callback is called after this. */
  close(): void;
  /** Connect again now, resuming where it was; also restarts a failed feed. */
  reconnect(): void;
}

/** A stream being followed. */
export class StreamHandle extends LiveHandle {
  /** The offset of the next value to come. */
  readonly nextOffset: number;
}

/** The client of one server, with one key or token. */
export class WorkflowClient {
  constructor(options?: ClientOptions);
  readonly baseUrl: string;

  /** Any API call: the JSON answer, or a WorkflowCommError. */
  request<T = any>(
    method: "GET" | "POST",
    path: string,
    options?: {
      query?: Record<string, string | number | boolean | undefined>;
      body?: unknown;
      headers?: Record<string, string>;
      signal?: AbortSignal;
    },
  ): Promise<T>;
  /** The workflow's status. */
  getWorkflow(workflowId: string): Promise<Workflow>;
  /** An event's value, waiting up to `timeout` seconds (default 5, at most 120) for it. */
  getEvent(
    workflowId: string,
    key: string,
    options?: { timeout?: number; signal?: AbortSignal },
  ): Promise<unknown>;
  /** The streams the workflow has written so far. */
  listStreamKeys(workflowId: string): Promise<StreamInfo[]>;
  /** Recent workflows, newest first (an API key's call). */
  listWorkflows(filters?: WorkflowFilters & { limit?: number }): Promise<Workflow[]>;
  /** Send a JSON object on `topic` (default "notification"); an idempotency key makes retries safe. */
  send(
    workflowId: string,
    message: Record<string, unknown>,
    options?: { topic?: string; idempotencyKey?: string; signal?: AbortSignal },
  ): Promise<MessageSent>;

  /** Follow a stream, each value exactly once, across reconnects and server restarts. */
  followStream(workflowId: string, options: FollowStreamOptions): StreamHandle;
  /** Watch every event: current values, then changes, until the workflow ends. */
  watchEvents(workflowId: string, options: WatchEventsOptions): LiveHandle;
  /** Watch the workflow's status until it ends. */
  watchStatus(workflowId: string, options: WatchStatusOptions): LiveHandle;
  /** Watch every workflow started and every status change (an API key's call). */
  watchWorkflows(options: WatchWorkflowsOptions): LiveHandle;
  /** Watch the workflow's timeline until it ends. */
  watchTimeline(workflowId: string, options: WatchTimelineOptions): LiveHandle;
}
