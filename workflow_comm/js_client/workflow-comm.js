// workflow-comm.js: the browser client of the DBOS workflow communication server.
//
// One ES module, no build step and no dependency; the server serves it at
// /client/workflow-comm.js, with its TypeScript declarations beside it at
// /client/workflow-comm.d.ts. It is the one place that knows the live endpoints' protocol:
// the dashboard is built on it.
//
//   import { WorkflowClient } from "/client/workflow-comm.js";
//   const client = new WorkflowClient({ token }); // a token from POST /tokens, or { apiKey }
//   const live = client.followStream("my-wf-7", { onValue: (value, offset) => show(value) });
//   await client.send("my-wf-7", { approved: true }, { idempotencyKey: "approve-my-wf-7" });
//   live.close();
//
// Live feeds are read with fetch(), not EventSource: the key or token then travels in the
// `Authorization` header (never in a URL), an HTTP error (an expired token's 401, an unknown
// workflow's 404) is seen for what it is, and every reconnect says itself where to resume.

/** How long to wait before the first reconnect; each further failure doubles it. */
const RETRY_FIRST_MS = 500;
/** The longest wait between two reconnects. */
const RETRY_MAX_MS = 5000;
/** Refusals no retry can change (bad credentials, no such workflow, invalid parameters). */
const FINAL_STATUSES = new Set([400, 401, 403, 404, 405, 409, 410, 413, 422]);

/**
 * A request the server refused, or could not be sent.
 *
 * `status` is the HTTP status (0: the server could not be reached); `detail` the server's
 * `detail` (a string, or a list of field errors for a 422), null if it sent none.
 */
export class WorkflowCommError extends Error {
  /**
   * @param {number} status
   * @param {unknown} detail
   * @param {string} message
   */
  constructor(status, detail, message) {
    super(message);
    this.name = "WorkflowCommError";
    /** @type {number} */
    this.status = status;
    /** @type {unknown} */
    this.detail = detail;
  }
}

/**
 * @typedef {string | null | undefined | (() => string | null | undefined | Promise<string | null | undefined>)} Credential
 * A key or token, or a function that returns one (called before every request and every
 * (re)connect, so it can hand out a fresh token).
 */

/**
 * @typedef {object} ClientOptions
 * @property {string} [baseUrl] The server, e.g. "https://comm.example.com"; default: this page's origin.
 * @property {Credential} [token] A token from POST /tokens.
 * @property {Credential} [apiKey] An API key (COMM_API_KEYS); a page should rather hold a token.
 */

/**
 * @typedef {"connecting" | "open" | "reconnecting" | "ended" | "closed" | "failed"} LiveState
 * connecting: the first connection is being made; open: connected, values arrive;
 * reconnecting: the connection dropped, a new one is on its way; ended: the server said
 * nothing more will come (the workflow finished); closed: close() was called;
 * failed: the server refused the feed for good (see onError).
 */

/**
 * @typedef {object} LiveOptions
 * @property {(state: LiveState) => void} [onState] Told every change of the feed's state.
 * @property {(error: WorkflowCommError, info: {retrying: boolean}) => void} [onError]
 *   A connection failed: with `retrying` it is tried again (server away, 5xx), otherwise the
 *   feed has failed (401, 403, 404, 422) and stays so until reconnect().
 */

/**
 * A live feed: values arrive through its callbacks until the server ends it or close().
 */
export class LiveHandle {
  /** @param {Feed} feed */
  constructor(feed) {
    /** @type {Feed} */
    this._feed = feed;
  }

  /** @returns {LiveState} The feed's state now. */
  get state() {
    return this._feed.state;
  }

  /** Stop the feed: no callback is called after this. */
  close() {
    this._feed.stop();
  }

  /** Drop the connection and connect again now, resuming where it was; also restarts a feed
   * that failed (e.g. once a fresh token or key is at hand). */
  reconnect() {
    this._feed.restart();
  }
}

/**
 * A stream being followed; `nextOffset` is the offset of the next value it will deliver.
 */
export class StreamHandle extends LiveHandle {
  /** @param {Feed} feed @param {{next: number}} cursor */
  constructor(feed, cursor) {
    super(feed);
    this._cursor = cursor;
  }

  /** @returns {number} The offset of the next value to come (the count delivered, from 0). */
  get nextOffset() {
    return this._cursor.next;
  }
}

/** A workflow ID, key or other value, safe as one segment of a URL path. */
const segment = (value) => encodeURIComponent(String(value));

/** Call `callback`; an exception in it is reported (window.onerror) without breaking the feed. */
function notify(callback, ...args) {
  if (!callback) return;
  try {
    callback(...args);
  } catch (error) {
    queueMicrotask(() => {
      throw error;
    });
  }
}

/** A pause that `signal` cuts short. */
function pause(ms, signal) {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

/**
 * The server-sent events of a response body, as {event, data, id} (event "message" when
 * unnamed). Comments (the server's `: ping` heartbeat) are skipped.
 *
 * @param {ReadableStream<Uint8Array>} body
 * @returns {AsyncGenerator<{event: string, data: string, id: string | null}>}
 */
async function* serverSentEvents(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let event = "";
  let data = [];
  let id = null;
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      // A "\r" at the very end may be the first half of "\r\n": keep it for the next chunk.
      const lines = buffer.split(/\r\n|\r(?!$)|\n/);
      buffer = lines.pop() ?? "";
      for (const line of lines) {
        if (line === "") {
          if (data.length) yield { event: event || "message", data: data.join("\n"), id };
          event = "";
          data = [];
          id = null;
          continue;
        }
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon === -1 ? line : line.slice(0, colon);
        let text = colon === -1 ? "" : line.slice(colon + 1);
        if (text.startsWith(" ")) text = text.slice(1);
        if (field === "event") event = text;
        else if (field === "data") data.push(text);
        else if (field === "id") id = text;
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

/**
 * One live endpoint, followed until it sends `closed`, the server refuses it, or stop().
 *
 * Where to (re)connect from is asked of `request()` at every connection, so each one resumes
 * exactly after what was delivered. A dropped connection, a 5xx (e.g. 503 while the server
 * restarts) or the server's `shutdown` reconnect with backoff; `overflow` (this page read too
 * slowly) reconnects at once.
 */
class Feed {
  /**
   * @param {WorkflowClient} client
   * @param {object} how
   * @param {() => {path: string, query?: Record<string, string | number | undefined>, headers?: Record<string, string>}} how.request
   * @param {(event: {event: string, data: any, id: string | null}) => "resume" | void} how.onEvent
   *   A value or `closed`; "resume" asks for a new connection now (a gap was seen).
   * @param {LiveOptions} options
   */
  constructor(client, { request, onEvent }, { onState, onError }) {
    this.client = client;
    this.request = request;
    this.onEvent = onEvent;
    this.onState = onState;
    this.onError = onError;
    /** @type {LiveState} */
    this.state = "connecting";
    this.retryMs = RETRY_FIRST_MS;
    this.stopped = false;
    this.running = false;
    this.controller = new AbortController();
  }

  start() {
    this.running = true;
    this.run().finally(() => {
      this.running = false;
    });
    return this;
  }

  stop() {
    if (this.stopped) return;
    this.stopped = true;
    this.controller.abort();
    this.setState("closed");
  }

  restart() {
    if (this.stopped) return;
    this.retryMs = RETRY_FIRST_MS;
    this.setState("reconnecting");
    this.controller.abort(); // ends the connection or the pause: run() goes on at once
    if (!this.running) this.start();
  }

  setState(state) {
    if (state === this.state) return;
    this.state = state;
    notify(this.onState, state);
  }

  backoff() {
    const delay = this.retryMs;
    this.retryMs = Math.min(this.retryMs * 2, RETRY_MAX_MS);
    return delay;
  }

  async run() {
    while (!this.stopped) {
      if (this.controller.signal.aborted) this.controller = new AbortController();
      const { signal } = this.controller;
      const delay = await this.connect(signal);
      if (delay === null || this.stopped) return;
      if (!signal.aborted) this.setState("reconnecting");
      await pause(delay, signal);
    }
  }

  /** One connection; the delay before the next, or null when the feed is over. */
  async connect(signal) {
    let response;
    try {
      response = await this.client._fetch({
        ...this.request(),
        method: "GET",
        accept: "text/event-stream",
        signal,
      });
    } catch (error) {
      if (signal.aborted) return 0;
      return this.failed(error);
    }
    if (!response.ok) {
      const error = await this.client._refusal(response);
      if (signal.aborted) return 0;
      const retryAfter = Number(response.headers.get("Retry-After"));
      const delay = this.failed(error);
      return delay === null || !retryAfter ? delay : Math.max(delay, retryAfter * 1000);
    }
    this.setState("open");
    this.retryMs = RETRY_FIRST_MS;
    try {
      for await (const item of serverSentEvents(response.body)) {
        if (this.stopped) return null;
        const data = JSON.parse(item.data);
        // Both carry where to resume (`resume_offset`, `last_event_id`): the point after the
        // last item sent, which is what request() asks for next, as items arrive in order.
        if (item.event === "overflow") return 0;
        if (item.event === "shutdown") return this.backoff();
        if (this.onEvent({ event: item.event, data, id: item.id }) === "resume") return 0;
        if (item.event === "closed") {
          this.stopped = true;
          this.setState("ended");
          return null;
        }
      }
    } catch (error) {
      if (signal.aborted) return 0;
      return this.failed(new WorkflowCommError(0, null, `The live connection dropped: ${error}`));
    }
    return this.backoff(); // the response ended without `closed`: the connection was cut
  }

  /** Report `error`; the delay before retrying, or null if the feed failed for good. */
  failed(error) {
    const retrying = !FINAL_STATUSES.has(error.status);
    notify(this.onError, error, { retrying });
    if (retrying) return this.backoff();
    this.setState("failed");
    return null;
  }
}

/**
 * The client of one server, with one key or token.
 *
 * Live feeds (followStream, watchEvents, watchStatus, watchWorkflows) reconnect by
 * themselves and resume where they were; each returns a handle with close(). A browser
 * opens at most 6 connections to one server over HTTP/1.1, each live feed holding one:
 * follow a few at a time, or serve over HTTP/2.
 */
export class WorkflowClient {
  /** @param {ClientOptions} [options] */
  constructor({ baseUrl, token, apiKey } = {}) {
    if (token && apiKey) throw new TypeError("Give a token or an API key, not both.");
    /** @type {string} */
    this.baseUrl = (baseUrl ?? globalThis.location?.origin ?? "").replace(/\/+$/, "");
    // Tokens and keys are both sent as `Authorization: Bearer`; the server tells them apart.
    this._credential = token ?? apiKey ?? null;
  }

  // -- reading and sending ----------------------------------------------------------------

  /**
   * Any API call; resolves to the JSON answer, rejects with a WorkflowCommError.
   *
   * @param {string} method "GET" or "POST"
   * @param {string} path e.g. "/workflows/my-wf-1"
   * @param {{query?: Record<string, string | number | boolean | undefined>, body?: unknown, headers?: Record<string, string>, signal?: AbortSignal}} [options]
   * @returns {Promise<any>}
   */
  async request(method, path, { query, body, headers, signal } = {}) {
    const response = await this._fetch({ method, path, query, body, headers, signal });
    if (!response.ok) throw await this._refusal(response);
    return response.json();
  }

  /**
   * The workflow's status, as `GET /workflows/{id}` shows it.
   *
   * @param {string} workflowId
   * @returns {Promise<import("./workflow-comm.d.ts").Workflow>}
   */
  getWorkflow(workflowId) {
    return this.request("GET", `/workflows/${segment(workflowId)}`);
  }

  /**
   * An event's value, waiting up to `timeout` seconds (server default 5, at most 120) for the
   * workflow to set it. Rejects with a 404 WorkflowCommError if it is not set by then, or the
   * workflow finished without setting it.
   *
   * @param {string} workflowId
   * @param {string} key
   * @param {{timeout?: number, signal?: AbortSignal}} [options]
   * @returns {Promise<unknown>}
   */
  async getEvent(workflowId, key, { timeout, signal } = {}) {
    const path = `/workflow-events/${segment(workflowId)}/${segment(key)}`;
    const answer = await this.request("GET", path, { query: { timeout }, signal });
    return answer.value;
  }

  /**
   * The streams the workflow has written so far: [{key, length, closed}].
   *
   * @param {string} workflowId
   * @returns {Promise<import("./workflow-comm.d.ts").StreamInfo[]>}
   */
  async listStreamKeys(workflowId) {
    const answer = await this.request("GET", `/workflows/${segment(workflowId)}/stream-keys`);
    return answer.data;
  }

  /**
   * Recent workflows, newest first (needs an API key: a token is for its own workflows).
   *
   * @param {{limit?: number, status?: string, kind?: string, app?: string}} [filters]
   * @returns {Promise<import("./workflow-comm.d.ts").Workflow[]>}
   */
  async listWorkflows(filters = {}) {
    const answer = await this.request("GET", "/workflows", { query: filters });
    return answer.data;
  }

  /**
   * Send a JSON object to the workflow, on `topic` (server default "notification"). Resolves
   * once the message is stored. With an `idempotencyKey`, a repeat with the same key is
   * dropped by the server: retrying a send whose answer was lost is then safe.
   *
   * @param {string} workflowId
   * @param {Record<string, unknown>} message
   * @param {{topic?: string, idempotencyKey?: string, signal?: AbortSignal}} [options]
   * @returns {Promise<import("./workflow-comm.d.ts").MessageSent>}
   */
  send(workflowId, message, { topic, idempotencyKey, signal } = {}) {
    const headers = idempotencyKey ? { "Idempotency-Key": idempotencyKey } : {};
    return this.request("POST", `/send-message/${segment(workflowId)}`, {
      query: { topic },
      body: message,
      headers,
      signal,
    });
  }

  // -- live feeds -------------------------------------------------------------------------

  /**
   * Follow a stream: `onValue(value, offset)` for each value, from `offset` (default 0), in
   * order, each exactly once, across dropped connections and server restarts; then
   * `onClose({key, status, next_offset})` once the stream is closed or its workflow ended.
   *
   * @param {string} workflowId
   * @param {LiveOptions & {key?: string, offset?: number, onValue: (value: any, offset: number) => void, onClose?: (end: import("./workflow-comm.d.ts").StreamEnd) => void}} options
   * @returns {StreamHandle}
   */
  followStream(workflowId, { key, offset = 0, onValue, onClose, ...live }) {
    const cursor = { next: offset };
    const feed = new Feed(
      this,
      {
        // The next offset to deliver, every time: a reconnect neither skips nor repeats.
        request: () => ({
          path: `/workflow-stream/${segment(workflowId)}/live`,
          query: { key, offset: cursor.next },
        }),
        onEvent: ({ event, data, id }) => {
          if (event === "closed") return notify(onClose, data);
          const at = Number(id);
          if (at < cursor.next) return; // already delivered
          if (at > cursor.next) return "resume"; // one was missed: ask again from it
          cursor.next += 1;
          notify(onValue, data, at);
        },
      },
      live,
    );
    return new StreamHandle(feed.start(), cursor);
  }

  /**
   * Watch every event of the workflow: `onEvent({key, value, version})` for the current value
   * of each key, then for every change, until the workflow ends (`onClose({status})`). After
   * a reconnect only keys changed meanwhile come again, and never an older value of a key.
   *
   * @param {string} workflowId
   * @param {LiveOptions & {onEvent: (change: import("./workflow-comm.d.ts").EventChange) => void, onClose?: (end: {workflow_id: string, status: string}) => void}} options
   * @returns {LiveHandle}
   */
  watchEvents(workflowId, { onEvent, onClose, ...live }) {
    /** @type {Record<string, number>} */
    const versions = {};
    let last = -1; // the highest version delivered: the server resumes after it
    const feed = new Feed(
      this,
      {
        request: () => ({
          path: `/workflow-events/${segment(workflowId)}/live`,
          headers: last >= 0 ? { "Last-Event-ID": String(last) } : {},
        }),
        onEvent: ({ event, data }) => {
          if (event === "closed") return notify(onClose, data);
          last = Math.max(last, data.version);
          if (data.version <= (versions[data.key] ?? -1)) return;
          versions[data.key] = data.version;
          notify(onEvent, data);
        },
      },
      live,
    );
    return new LiveHandle(feed.start());
  }

  /**
   * Watch the workflow's status: `onStatus(workflow)` now, at every change, and with the final
   * status (with its `result` or `error`) when it ends, then `onClose(workflow)`.
   *
   * @param {string} workflowId
   * @param {LiveOptions & {onStatus: (workflow: import("./workflow-comm.d.ts").Workflow) => void, onClose?: (workflow: import("./workflow-comm.d.ts").Workflow) => void}} options
   * @returns {LiveHandle}
   */
  watchStatus(workflowId, { onStatus, onClose, ...live }) {
    let shown = ""; // a reconnect sends the current status again: told once
    const tell = (workflow) => {
      const json = JSON.stringify(workflow);
      if (json !== shown) notify(onStatus, workflow);
      shown = json;
    };
    const feed = new Feed(
      this,
      {
        request: () => ({ path: `/workflows/${segment(workflowId)}/live` }),
        onEvent: ({ event, data }) => {
          tell(data);
          if (event === "closed") notify(onClose, data);
        },
      },
      live,
    );
    return new LiveHandle(feed.start());
  }

  /**
   * Watch the workflow's timeline: `onEntry(entry)` for each entry so far, in order, then for
   * each new one as it is recorded, until the workflow ends (`onClose({workflow_id, status})`).
   * A reconnect resumes after the last entry received; none is told twice.
   *
   * @param {string} workflowId
   * @param {LiveOptions & {onEntry: (entry: import("./workflow-comm.d.ts").TimelineEntry) => void, onClose?: (end: {workflow_id: string, status: string}) => void}} options
   * @returns {LiveHandle}
   */
  watchTimeline(workflowId, { onEntry, onClose, ...live }) {
    const told = new Set();
    let last = null; // the id of the last entry received: the server resumes after it
    const feed = new Feed(
      this,
      {
        request: () => ({
          path: `/workflows/${segment(workflowId)}/timeline/live`,
          headers: last ? { "Last-Event-ID": last } : {},
        }),
        onEvent: ({ event, data }) => {
          if (event === "closed") return notify(onClose, data);
          last = data.id;
          if (told.has(data.id)) return;
          told.add(data.id);
          notify(onEntry, data);
        },
      },
      live,
    );
    return new LiveHandle(feed.start());
  }

  /**
   * Watch every workflow started and every status change from now on (needs an API key),
   * with the filters of listWorkflows. It never ends by itself. Changes made while it was
   * reconnecting are not sent again: reload the list on each `onState("open")`.
   *
   * @param {LiveOptions & {status?: string, kind?: string, app?: string, onWorkflow: (workflow: import("./workflow-comm.d.ts").Workflow) => void}} options
   * @returns {LiveHandle}
   */
  watchWorkflows({ status, kind, app, onWorkflow, ...live }) {
    const feed = new Feed(
      this,
      {
        request: () => ({ path: "/workflows/live", query: { status, kind, app } }),
        onEvent: ({ data }) => notify(onWorkflow, data),
      },
      live,
    );
    return new LiveHandle(feed.start());
  }

  // -- the wire ---------------------------------------------------------------------------

  /**
   * One fetch with the credential; rejects (status 0) if the server is unreachable. Internal:
   * request() and the live feeds go through it.
   *
   * @param {{method: string, path: string, query?: Record<string, unknown>, body?: unknown, headers?: Record<string, string>, accept?: string, signal?: AbortSignal}} call
   * @returns {Promise<Response>}
   */
  async _fetch({ method, path, query, body, headers, accept = "application/json", signal }) {
    const url = new URL(`${this.baseUrl}${path}`, globalThis.location?.href);
    for (const [name, value] of Object.entries(query ?? {})) {
      if (value !== undefined && value !== null) url.searchParams.set(name, String(value));
    }
    /** @type {Record<string, string>} */
    const sent = { Accept: accept, ...headers };
    const credential =
      typeof this._credential === "function" ? await this._credential() : this._credential;
    if (credential) sent.Authorization = `Bearer ${credential}`;
    if (body !== undefined) sent["Content-Type"] = "application/json";
    const init = { method, headers: sent, signal, cache: /** @type {const} */ ("no-store") };
    try {
      return await fetch(url, body === undefined ? init : { ...init, body: JSON.stringify(body) });
    } catch (error) {
      if (signal?.aborted) throw error;
      throw new WorkflowCommError(0, null, "The server could not be reached.");
    }
  }

  /**
   * The error of a refused request, with the server's `detail`. Internal, as _fetch.
   *
   * @param {Response} response
   * @returns {Promise<WorkflowCommError>}
   */
  async _refusal(response) {
    const json = await response.json().catch(() => null);
    const detail = json?.detail ?? null;
    const said = typeof detail === "string" ? detail : JSON.stringify(detail);
    const message = detail === null ? `HTTP ${response.status}` : `HTTP ${response.status}: ${said}`;
    return new WorkflowCommError(response.status, detail, message);
  }
}
