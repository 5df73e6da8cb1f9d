// The followed workflow's mailbox and timeline. The timeline comes live from the server
// (/workflows/{id}/timeline/live); each entry about a message also reloads the mailbox, so the
// page asks for it only when it changed.

import { client, request, segment } from "./api.js";

const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";
// The lanes of the chart, top to bottom: steps are bars, everything else a mark.
const LANES = [
  ["steps", ["step", "operation"]],
  ["events", ["event"]],
  ["messages", ["message_sent", "message_received", "recv_timeout", "send"]],
  ["streams", ["stream_write", "stream_close"]],
  ["workflow", ["created", "recovery", "status", "end"]],
];
const LANE_OF = Object.fromEntries(LANES.flatMap(([lane, types], i) => types.map((t) => [t, i])));
const WIDTH = 640;
const LABEL = 80;
const LANE_HEIGHT = 22;
const MAILBOX_LIMIT = 100;

const time = (ms) => new Date(ms).toLocaleTimeString();
// An entry DBOS keeps no time for (a recovery) has `at: null`: listed, not drawn.
const hasTime = (entry) => typeof entry.at === "number";

function describe(entry) {
  const shown = (value) => JSON.stringify(value)?.slice(0, 80) ?? "";
  switch (entry.type) {
    case "created":
      return `created on executor ${entry.executor_id}`;
    case "step":
    case "operation":
      return `${entry.name}: ${entry.duration_ms ?? "?"} ms${entry.error ? `, ${entry.error}` : ""}`;
    case "event":
      return `event ${entry.key} = ${entry.preview ?? shown(entry.value)}`;
    case "message_sent":
      return `message sent on ${entry.topic}: ${entry.preview ?? shown(entry.value)}`;
    case "message_received":
      return `message received on ${entry.topic}`;
    case "stream_write":
      return `stream ${entry.key} #${entry.offset}: ${entry.preview ?? shown(entry.value)}`;
    case "stream_close":
      return `stream ${entry.key} closed`;
    case "recovery":
      return `recovered ${entry.attempts} time(s)`;
    case "end":
      return `ended: ${entry.status}`;
    default:
      return entry.type.replace("_", " ");
  }
}

export class WorkflowHistory {
  constructor() {
    this.feed = null;
    this.entries = [];
    this.drawing = false;
    this.mailboxDue = null;
  }

  /** Show the workflow `id`'s mailbox and timeline (and stop showing any other). */
  show(id) {
    this.stop();
    this.id = id;
    this.entries = [];
    $("history").hidden = false;
    $("timeline-list").replaceChildren();
    $("timeline-summary").textContent = "Loading…";
    this.draw();
    this.loadMailbox();
    this.feed = client.watchTimeline(id, {
      onEntry: (entry) => this.add(entry),
      onClose: () => this.loadMailbox(),
      onError: (error) => {
        $("timeline-summary").textContent = `The timeline is not available: ${error.message}`;
      },
    });
  }

  stop() {
    this.feed?.close();
    this.feed = null;
    clearTimeout(this.mailboxDue);
  }

  add(entry) {
    this.entries.push(entry);
    const item = document.createElement("li");
    item.dataset.type = entry.type;
    item.textContent = `${hasTime(entry) ? time(entry.at) : "–"} ${describe(entry)}`;
    $("timeline-list").append(item);
    $("timeline-summary").textContent = `${this.entries.length} entries.`;
    if (entry.type.startsWith("message")) this.mailboxSoon();
    if (!this.drawing) {
      this.drawing = true;
      requestAnimationFrame(() => {
        this.drawing = false;
        this.draw();
      });
    }
  }

  /** Steps as bars on a time axis, everything else as marks, one lane per kind. */
  draw() {
    const chart = $("timeline-chart");
    const timed = this.entries.filter(hasTime);
    chart.hidden = timed.length === 0;
    chart.replaceChildren();
    if (chart.hidden) return;
    const first = Math.min(...timed.map((e) => e.at));
    const last = Math.max(...timed.map((e) => e.end ?? e.at));
    const span = Math.max(last - first, 1);
    const x = (ms) => LABEL + ((ms - first) / span) * (WIDTH - LABEL - 10);
    const height = LANES.length * LANE_HEIGHT + 20;
    chart.setAttribute("viewBox", `0 0 ${WIDTH} ${height}`);
    const add = (name, attributes, title) => {
      const node = document.createElementNS(SVG, name);
      for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
      if (title) {
        const tip = document.createElementNS(SVG, "title");
        tip.textContent = title;
        node.append(tip);
      }
      chart.append(node);
      return node;
    };
    LANES.forEach(([lane], i) => {
      add("text", { x: 0, y: i * LANE_HEIGHT + 15, class: "lane" }).textContent = lane;
    });
    for (const entry of timed) {
      const lane = LANE_OF[entry.type] ?? LANES.length - 1;
      const y = lane * LANE_HEIGHT + 4;
      const title = `${time(entry.at)} ${describe(entry)}`;
      if (entry.end !== undefined && entry.end !== null) {
        const width = Math.max(x(entry.end) - x(entry.at), 2);
        add("rect", { x: x(entry.at), y, width, height: 14, class: `bar ${entry.type}` }, title);
      } else {
        add("circle", { cx: x(entry.at), cy: y + 7, r: 4, class: `mark ${entry.type}` }, title);
      }
    }
    const axis = LANES.length * LANE_HEIGHT + 14;
    add("text", { x: LABEL, y: axis, class: "axis" }).textContent = time(first);
    add("text", { x: WIDTH - 10, y: axis, class: "axis end" }).textContent = `+${span} ms`;
  }

  mailboxSoon() {
    clearTimeout(this.mailboxDue);
    this.mailboxDue = setTimeout(() => this.loadMailbox(), 200);
  }

  async loadMailbox() {
    const id = this.id;
    let page;
    try {
      page = await request("GET", `/workflows/${segment(id)}/messages`, {
        query: { limit: MAILBOX_LIMIT },
      });
    } catch (failure) {
      if (id === this.id) $("mailbox-summary").textContent = failure.message;
      return;
    }
    if (id !== this.id) return; // another workflow is shown by now
    const pending = page.data.filter((m) => !m.consumed).length;
    $("mailbox-summary").textContent = page.count
      ? `${page.count} message(s): ${pending} pending, ${page.count - pending} consumed.`
      : "No messages sent to this workflow.";
    $("mailbox-table").hidden = page.count === 0;
    $("mailbox-rows").replaceChildren(
      ...page.data.map((message) => {
        const row = document.createElement("tr");
        row.dataset.state = message.consumed ? "consumed" : "pending";
        const cells = [
          time(message.sent_at),
          message.topic ?? "(none)",
          JSON.stringify(message.payload),
          message.consumed
            ? `consumed${message.consumed_at ? ` at ${time(message.consumed_at)}` : ""}`
            : "pending",
        ];
        for (const text of cells) {
          const cell = document.createElement("td");
          cell.textContent = text;
          row.append(cell);
        }
        return row;
      }),
    );
  }
}
