// The list of recent workflows: loaded, then kept current by GET /workflows/live, which pushes
// every new workflow and every status change as it happens (no polling, no Refresh button).

import { client, request } from "./api.js";
import { clock, element, statusClass, TERMINAL } from "./format.js";

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
    this.feed = null;
    this.list.addEventListener("click", (event) => {
      const button = event.target.closest("button[data-id]");
      if (button) this.onChoose(button.dataset.id);
    });
  }

  /** Load the list and follow its live feed. */
  start() {
    // Each time it (re)connects, the list is loaded again: whatever changed while it was
    // away is then shown, and pushes keep it current from there.
    this.feed = client.watchWorkflows({
      onWorkflow: (workflow) => this.push(workflow),
      onState: (state) => {
        if (state === "open") this.reload();
      },
    });
    this.reload();
  }

  /** Load the list again now, and reconnect its live feed if it is not connected (e.g. an
   * API key was just entered). */
  refresh() {
    if (this.feed && !["open", "connecting"].includes(this.feed.state)) this.feed.reconnect();
    return this.reload();
  }

  reload() {
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
      this.showUpdated();
    } catch (error) {
      const problem = `Could not load the list: ${error.message}`;
      // Only a change is announced: an alert repeated every few seconds would drown the page.
      if ($("recent-error").textContent !== problem) $("recent-error").textContent = problem;
    }
  }

  showUpdated() {
    $("recent-updated").textContent = this.rows.size
      ? `Newest first. Updated ${clock(Date.now())}.`
      : "No workflows yet: start one.";
  }

  /** A workflow pushed by the list's live feed: new ones go on top, others change in place. */
  push(workflow) {
    let row = this.rows.get(workflow.workflow_id);
    if (!row) {
      row = this.createRow(workflow.workflow_id);
      this.list.prepend(row);
      while (this.list.children.length > SHOWN) {
        const oldest = this.list.lastElementChild;
        this.rows.delete(oldest.querySelector("button").dataset.id);
        oldest.remove();
      }
    }
    this.fill(row, workflow);
    this.showUpdated();
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
    // A list loaded before a push may arrive after it: never show an older state.
    const shown = row.dataset;
    const updated = workflow.updated_at ?? 0;
    if (shown.updated !== undefined) {
      const before = Number(shown.updated);
      const older = updated < before || (updated === before && TERMINAL.has(shown.status));
      if (older && workflow.status !== shown.status) return;
    }
    shown.updated = String(updated);
    shown.status = workflow.status;
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
