// The followed workflow: status, events, stream log and messages, all pushed live.
//
// A browser opens at most 6 connections to one server over HTTP/1.1, so one workflow is
// followed at a time, with two feeds: its status, plus its events (progress bar) or, for a
// streaming workflow, its stream (the log). A workflow the demo did not define (any served
// workflow: `kind` is null) gets three: status, every event, and one of its streams, chosen
// from those it has written (GET /workflows/{id}/stream-keys). The feeds are the browser
// client's (/client/workflow-comm.js): they resume by themselves, with no gap and no repeat.

import { client, request, segment } from "./api.js";
import { config } from "./config.js";
import { clock, element, statusClass, TERMINAL } from "./format.js";

const SUMMARY_RESULTS_SHOWN = 8;
// The stream keys are looked up again on events and status changes, at most this often.
const STREAM_KEYS_EVERY_MS = 1000;

const $ = (id) => document.getElementById(id);

function describeEntry(entry) {
  switch (entry.type) {
    case "result":
      return `Step ${entry.step}: fibonacci(${entry.n}) = ${entry.fibonacci}`;
    case "summary": {
      const values = entry.results.map((r) => r.fibonacci);
      const more = values.length > SUMMARY_RESULTS_SHOWN ? ", …" : "";
      const shown = values.slice(0, SUMMARY_RESULTS_SHOWN).join(", ");
      return `Summary of ${entry.total_steps} steps: ${shown}${more}`;
    }
    default:
      return entry.message ?? JSON.stringify(entry);
  }
}

export class FollowedWorkflow {
  /** `onStatus(workflow)` is told every status the feeds report (for the recent list). */
  constructor({ onStatus }) {
    this.onStatus = onStatus;
    this.feeds = [];
    this.generation = 0;
    this.workflow = null;
    this.stepStatus = null;
    this.totalSteps = null;
    this.busy = false;
    this.stream = null; // the feed of the stream shown in the log
    this.streamKey = null;
    this.keysAt = 0;
    this.keysTimer = null;
    $("default-topic").textContent = config.topic;
    $("message-topic").value = config.topic;
    $("message-body").value = JSON.stringify({ approved: true, message: "Looks good" });
    $("approve").addEventListener("click", () => this.send({ approved: true }, config.topic));
    $("reject").addEventListener("click", () => this.send({ approved: false }, config.topic));
    $("message-form").addEventListener("submit", (event) => {
      event.preventDefault();
      this.sendCustom();
    });
    $("stream-key").addEventListener("change", () => this.followStream($("stream-key").value));
  }

  /** Not one of the demo's workflows: shown generically. */
  get generic() {
    return this.workflow !== null && this.workflow.kind === null;
  }

  get id() {
    return this.workflow?.workflow_id ?? null;
  }

  /** Follow workflow `id`; false (and the reason shown) if it cannot be found. */
  async follow(id) {
    const generation = ++this.generation;
    this.stop();
    $("follow-error").textContent = "";
    let workflow;
    try {
      workflow = await request("GET", `/workflows/${segment(id)}`);
    } catch (error) {
      if (generation === this.generation) $("follow-error").textContent = error.message;
      return false;
    }
    if (generation !== this.generation) return false; // another follow() came after this one
    this.reset(workflow);
    const onState = () => this.showConnection();
    // Every change, and the final status with its result or error.
    this.feeds = [client.watchStatus(id, { onStatus: (wf) => this.showWorkflow(wf), onState })];
    if (workflow.kind === "streaming") {
      this.stream = this.streamFeed(id, config.streamKey);
      this.feeds.push(this.stream);
    } else {
      this.feeds.push(client.watchEvents(id, { onEvent: (change) => this.showEvent(change), onState }));
    }
    this.showConnection();
    if (this.generic) this.findStreams();
    return true;
  }

  streamFeed(id, key) {
    return client.followStream(id, {
      key,
      onValue: (value, offset) => this.showEntry(value, offset),
      onClose: () => this.streamClosed(),
      onState: () => this.showConnection(),
    });
  }

  /** Look up the streams the workflow has written, soon (at most every STREAM_KEYS_EVERY_MS);
   * the first one found is followed. */
  findStreams() {
    if (this.keysTimer !== null) return;
    const wait = Math.max(0, this.keysAt + STREAM_KEYS_EVERY_MS - Date.now());
    this.keysTimer = setTimeout(() => this.loadStreamKeys(), wait);
  }

  async loadStreamKeys() {
    const id = this.id;
    this.keysAt = Date.now();
    let keys;
    try {
      ({ data: keys } = await request("GET", `/workflows/${segment(id)}/stream-keys`));
    } catch {
      keys = null; // shown again at the next change
    } finally {
      this.keysTimer = null;
    }
    if (id !== this.id || keys === null) return;
    const select = $("stream-key");
    const known = new Set(Array.from(select.options, (option) => option.value));
    for (const { key } of keys) {
      if (!known.has(key)) select.append(element("option", { value: key, textContent: key }));
    }
    $("stream-choice").hidden = select.options.length === 0;
    if (this.streamKey === null && keys.length) this.followStream(keys[0].key);
  }

  /** Show stream `key` in the log, from its start. */
  followStream(key) {
    if (key === this.streamKey) return;
    if (this.stream) {
      this.stream.close();
      this.feeds = this.feeds.filter((feed) => feed !== this.stream);
    }
    this.streamKey = key;
    $("stream-key").value = key;
    $("stream-log").replaceChildren();
    $("stream-text").textContent = "";
    $("stream-text").hidden = true;
    $("stream-summary").textContent = "No entries yet.";
    this.stream = this.streamFeed(this.id, key);
    this.feeds.push(this.stream);
    this.showConnection();
  }

  stop() {
    for (const feed of this.feeds) feed.close();
    this.feeds = [];
    this.stream = null;
    clearTimeout(this.keysTimer);
    this.keysTimer = null;
  }

  reset(workflow) {
    this.workflow = workflow;
    this.stepStatus = null;
    this.totalSteps = null;
    this.streamKey = null;
    $("followed-empty").hidden = true;
    $("followed-body").hidden = false;
    $("f-id").textContent = workflow.workflow_id;
    $("f-kind").textContent = workflow.kind ?? workflow.name;
    $("f-step").textContent = "–";
    $("f-message").textContent = "nothing yet";
    $("f-result").textContent = "Not finished yet.";
    $("message-error").textContent = "";
    $("message-note").textContent = "";
    $("stream-log").replaceChildren();
    $("stream-summary").textContent = "No entries yet.";
    $("stream-key").replaceChildren();
    $("stream-choice").hidden = true;
    $("stream-text").textContent = "";
    $("stream-text").hidden = true;
    $("events-list").replaceChildren();
    $("events-empty").hidden = false;
    const generic = workflow.kind === null;
    $("messaging-panel").hidden = workflow.kind !== "messaging" && !generic;
    $("approval-buttons").hidden = generic;
    $("stream-panel").hidden = workflow.kind !== "streaming" && !generic;
    $("events-panel").hidden = !generic;
    this.setProgress(0);
    this.showWorkflow(workflow);
  }

  showConnection() {
    const states = this.feeds.map((feed) => feed.state);
    let text = "Live";
    if (states.includes("reconnecting")) text = "Reconnecting…";
    else if (states.includes("failed")) text = "Not connected";
    else if (states.includes("connecting")) text = "Connecting…";
    else if (states.every((state) => state === "ended")) text = "Finished";
    $("f-connection").textContent = text;
  }

  showWorkflow(workflow) {
    this.workflow = { ...this.workflow, ...workflow };
    const status = $("f-status");
    status.textContent = workflow.status;
    status.className = statusClass(workflow.status);
    if (TERMINAL.has(workflow.status)) {
      const outcome = workflow.error ?? workflow.result;
      if (outcome !== null && outcome !== undefined) {
        $("f-result").textContent =
          typeof outcome === "string" ? outcome : JSON.stringify(outcome, null, 2);
      }
    }
    this.showMessaging();
    if (this.generic) this.findStreams();
    this.onStatus(this.workflow);
  }

  /** An event's value: each change once, never an older one after a newer (the client's). */
  showEvent({ key, value }) {
    const { events } = config;
    if (this.generic) {
      this.showEventValue(key, value);
      this.findStreams();
    }
    if (key === events.progress) this.setProgress(value);
    else if (key === events.status) {
      this.stepStatus = value;
      $("f-step").textContent = value;
      this.showMessaging();
    } else if (key === events.message) $("f-message").textContent = JSON.stringify(value);
    else if (key === events.result) $("f-result").textContent = JSON.stringify(value, null, 2);
  }

  /** A generic workflow's event, in the events list (one row per key, updated in place). */
  showEventValue(key, value) {
    const list = $("events-list");
    let row = Array.from(list.children).find((div) => div.dataset.key === key);
    if (!row) {
      row = element("div", {}, element("dt", { className: "mono", textContent: key }));
      row.dataset.key = key;
      row.append(element("dd", { className: "mono" }));
      list.append(row);
    }
    row.querySelector("dd").textContent = JSON.stringify(value);
    $("events-empty").hidden = true;
  }

  /** The stream's value at `offset`: each once, in offset order (the client sees to it). */
  showEntry(entry, offset) {
    if (this.generic) {
      this.showValue(entry, offset);
      return;
    }
    const item = element(
      "li",
      {},
      element("span", { className: "offset", textContent: `#${offset}` }),
      element("span", { className: "entry-type", textContent: entry.type }),
      element("span", { className: "entry-text", textContent: describeEntry(entry) }),
    );
    Object.assign(item.dataset, { offset: String(offset), type: entry.type });
    if (entry.timestamp) {
      const shown = clock(entry.timestamp, { ms: true });
      item.append(element("time", { dateTime: entry.timestamp, textContent: shown }));
    }
    const log = $("stream-log");
    const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 8;
    log.append(item);
    if (atBottom) log.scrollTop = log.scrollHeight;

    // The stream carries its own progress: start gives the step count, each result a step.
    if (entry.type === "start") this.totalSteps = entry.total_steps;
    if (entry.type === "result" && this.totalSteps) {
      this.setProgress(Math.floor((entry.step * 100) / this.totalSteps));
    }
    if (entry.type === "complete") this.setProgress(100);
    $("f-step").textContent = entry.message ?? entry.type;
    // start, a progress and a result entry per step, summary, complete.
    const of = this.totalSteps ? ` of ${3 + 2 * this.totalSteps}` : "";
    $("stream-summary").textContent = `${offset + 1}${of} entries received.`;
  }

  /** A generic workflow's stream value: its text, or its JSON. Text values (such as an LLM's
   * tokens) are also shown joined up, as the text they make. */
  showValue(value, offset) {
    const text = typeof value === "string";
    const item = element(
      "li",
      {},
      element("span", { className: "offset", textContent: `#${offset}` }),
      element("span", { className: "entry-text", textContent: text ? value : JSON.stringify(value) }),
    );
    Object.assign(item.dataset, { offset: String(offset), type: text ? "text" : typeof value });
    const log = $("stream-log");
    const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 8;
    log.append(item);
    if (atBottom) log.scrollTop = log.scrollHeight;
    if (text) {
      $("stream-text").textContent += value;
      $("stream-text").hidden = false;
    }
    $("stream-summary").textContent = `${offset + 1} entries received.`;
  }

  streamClosed() {
    const count = this.stream?.nextOffset ?? 0;
    $("stream-summary").textContent = `Stream closed after ${count} entries.`;
  }

  setProgress(value) {
    const percent = Math.max(0, Math.min(100, Number(value) || 0));
    $("f-progress").value = percent;
    $("f-progress-text").textContent = `${percent}%`;
  }

  showMessaging() {
    const finished = TERMINAL.has(this.workflow?.status);
    if (this.generic) {
      $("send-message").disabled = finished || this.busy;
      $("messaging-state").textContent = finished
        ? "The workflow has finished; it takes no more messages."
        : "Send the workflow a message on the topic it waits on.";
      return;
    }
    const waiting = !finished && this.stepStatus === config.statuses.waiting;
    $("approve").disabled = !waiting || this.busy;
    $("reject").disabled = !waiting || this.busy;
    $("send-message").disabled = finished || this.busy;
    let state = `The workflow waits for a message on topic “${config.topic}”.`;
    if (finished) state = "The workflow has finished; it takes no more messages.";
    else if (this.stepStatus && !waiting)
      state = `The workflow received its message: ${this.stepStatus}.`;
    $("messaging-state").textContent = state;
  }

  sendCustom() {
    const topic = $("message-topic").value.trim();
    let payload;
    try {
      payload = JSON.parse($("message-body").value);
    } catch (error) {
      $("message-error").textContent = `The message is not valid JSON: ${error.message}`;
      return;
    }
    if (payload === null || typeof payload !== "object" || Array.isArray(payload)) {
      $("message-error").textContent =
        'The message must be a JSON object, like {"approved": true}.';
      return;
    }
    if (!topic) {
      $("message-error").textContent = "Enter a topic.";
      return;
    }
    this.send(payload, topic);
  }

  async send(payload, topic) {
    const id = this.id;
    $("message-error").textContent = "";
    $("message-note").textContent = "";
    this.busy = true;
    this.showMessaging();
    try {
      await request("POST", `/send-message/${segment(id)}`, { query: { topic }, body: payload });
      if (id === this.id)
        $("message-note").textContent = `Sent ${JSON.stringify(payload)} on topic “${topic}”.`;
    } catch (error) {
      if (id === this.id) $("message-error").textContent = error.message;
    } finally {
      this.busy = false;
      this.showMessaging();
    }
  }
}
