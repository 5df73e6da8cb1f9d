// How statuses and times are shown.

import { config } from "./config.js";

/** Workflow statuses after which nothing changes (from the server: keys.TERMINAL_STATUSES). */
export const TERMINAL = new Set(config.terminalStatuses);

/** The CSS class of a status badge, e.g. "status-success". */
export const statusClass = (status) => `badge status-${status.toLowerCase().replaceAll("_", "-")}`;

/** A time of day, e.g. "14:03:07", or with `ms` "14:03:07.042". */
export function clock(value, { ms = false } = {}) {
  const time = new Date(value);
  const seconds = time.toLocaleTimeString([], { hour12: false });
  return ms ? `${seconds}.${String(time.getMilliseconds()).padStart(3, "0")}` : seconds;
}

/** A new element with properties set and children appended, e.g. element("li", {}, "text"). */
export function element(tag, properties = {}, ...children) {
  const node = Object.assign(document.createElement(tag), properties);
  node.append(...children);
  return node;
}
