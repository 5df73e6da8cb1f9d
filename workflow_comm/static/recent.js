// The list of recent workflows: refreshed every few seconds, and at once by the live feeds.

import { request } from "./api.js";
import { clock, element, statusClass } from "./format.js";

const REFRESH_MS = 3000;
const SHOWN = 20;

const $ = (id) => document.getElementById(id);

export class RecentList {
  /** `onChoose(id)` is called when a person picks a workflow from the list. */
  constructor({ onChoose }) {
    this.onChoose = onChoose;
    this.list = $("recent-list");
    this.rows = new Map(); // workflow ID -> its <li>
    this.current = null;
    this.inFlight = null;
    $("refresh-list").addEventListener("click", () => this.refresh());
    this.list.addEventListener("click", (event) => {
      const button = event.target.closest("button[data-id]");
      if (button) this.onChoose(button.dataset.id);
    });
  }

  /** Refresh now, then every few seconds while the page is visible. */
  start() {
    this.refresh();
    setInterval(() => {
      if (!document.hidden) this.refresh();
    }, REFRESH_MS);
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden) this.refresh();
    });
  }

  refresh() {
    this.inFlight ??= this.load().finally(() => {
      this.inFlight = null;
    });
    return this.inFlight;
  }

  async load() {
    try {
      const { data } = await request("GET", "/workflows", { query: { limit: SHOWN } });
      $("recent-error").textContent = "";
      this.render(data);
      $("recent-updated").textContent = data.length
        ? `Newest first. Updated ${clock(Date.now())}.`
        : "No workflows yet: start one.";
    } catch (error) {
      const problem = `Could not load the list: ${error.message}`;
      // Only a change is announced: an alert repeated every few seconds would drown the page.
      if ($("recent-error").textContent !== problem) $("recent-error").textContent = problem;
    }
  }

  // Rows are updated in place, not rebuilt: a row that has keyboard focus keeps it.
  render(workflows) {
    const focused = document.activeElement?.dataset?.id;
    const wanted = new Set(workflows.map((wf) => wf.workflow_id));
    for (const [id, row] of this.rows) {
      if (!wanted.has(id)) {
        row.remove();
        this.rows.delete(id);
      }
    }
    workflows.forEach((workflow, index) => {
      const row = this.rows.get(workflow.workflow_id) ?? this.createRow(workflow.workflow_id);
      this.fill(row, workflow);
      if (this.list.children[index] !== row)
        this.list.insertBefore(row, this.list.children[index] ?? null);
    });
    if (focused && document.activeElement === document.body) {
      this.rows.get(focused)?.querySelector("button").focus();
    }
  }

  createRow(id) {
    const button = element(
      "button",
      { type: "button", className: "workflow" },
      element("span", { className: "mono wf-id", textContent: id }),
      element("span", { className: "wf-kind" }),
      element("span", { className: "badge" }),
      element("time", { className: "wf-time" }),
    );
    button.dataset.id = id;
    const row = element("li");
    row.append(button);
    this.rows.set(id, row);
    button.setAttribute("aria-current", String(id === this.current));
    return row;
  }

  fill(row, workflow) {
    const [, kind, status, time] = row.querySelector("button").children;
    kind.textContent = workflow.kind ?? workflow.name;
    status.textContent = workflow.status;
    status.className = statusClass(workflow.status);
    if (workflow.created_at) {
      time.dateTime = new Date(workflow.created_at).toISOString();
      time.textContent = clock(workflow.created_at);
    }
  }

  /** A status pushed by the followed workflow's feed: shown at once, without a refresh. */
  update(workflow) {
    const row = this.rows.get(workflow.workflow_id);
    if (row) this.fill(row, workflow);
    else this.refresh();
  }

  /** Mark the followed workflow in the list. */
  setCurrent(id) {
    this.current = id;
    for (const [rowId, row] of this.rows) {
      row.querySelector("button").setAttribute("aria-current", String(rowId === id));
    }
  }
}
