// The page's client of the server (the browser client, /client/workflow-comm.js), its API
// key, and the errors of its calls in plain words.

import { WorkflowClient, WorkflowCommError } from "/client/workflow-comm.js";
import { config } from "./config.js";

// sessionStorage: the key lasts as long as the tab, and never reaches localStorage or a URL
// the person can see or share.
const KEY_STORAGE = "workflow-comm.api-key";
let key = "";
try {
  key = sessionStorage.getItem(KEY_STORAGE) ?? "";
} catch {
  // Storage blocked (e.g. a privacy setting): the key is kept in memory for this page only.
}
let onAnswer = () => {};

/** The API key this tab sends, or "" for none (a server without keys needs none). */
export const apiKey = () => key;

/** Use `value` ("" for none) from now on, for this tab. */
export function setApiKey(value) {
  key = value;
  try {
    if (key) sessionStorage.setItem(KEY_STORAGE, key);
    else sessionStorage.removeItem(KEY_STORAGE);
  } catch {
    // As above: in memory only.
  }
}

/** The client every call and live feed of the page goes through, with the key of the moment. */
export const client = new WorkflowClient({ apiKey: () => key });

/** `listener(status)` hears the HTTP status of every answer, to tell about the key. */
export function listenToAnswers(listener) {
  onAnswer = listener;
}

/** An API call that did not succeed; `message` is already written for a person. */
export class ApiError extends Error {
  constructor(status, detail, message) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.detail = detail;
  }
}

// How the form names the fields the API reports in a 422.
const FIELD_NAMES = {
  workflow_id: "Workflow ID",
  n_steps: "Steps",
  step_seconds: "Seconds per step",
  approval_timeout: "Approval timeout",
  topic: "Topic",
  body: "Message",
  "Idempotency-Key": "Idempotency key",
};

function fieldName(loc) {
  const field = [...loc].reverse().find((part) => typeof part === "string" && part in FIELD_NAMES);
  return FIELD_NAMES[field] ?? loc.filter((part) => part !== "path" && part !== "query").join(".");
}

// One pydantic error ({loc, msg, type, ctx}) as "Steps must be at most 1000".
function fieldProblem({ loc = [], msg = "", type = "", ctx = {} }) {
  const what = {
    missing: "is required",
    int_parsing: "must be a whole number",
    int_from_float: "must be a whole number",
    float_parsing: "must be a number",
    greater_than_equal: `must be at least ${ctx.ge}`,
    greater_than: `must be more than ${ctx.gt}`,
    less_than_equal: `must be at most ${ctx.le}`,
    less_than: `must be less than ${ctx.lt}`,
    string_too_short: `must have at least ${ctx.min_length} character(s)`,
    string_too_long: `must have at most ${ctx.max_length} characters`,
    string_pattern_mismatch: `may use only ${config.workflowIdRule}`,
    dict_type: 'must be a JSON object, like {"approved": true}',
    json_invalid: "is not valid JSON",
  }[type];
  return `${fieldName(loc)} ${what ?? msg.charAt(0).toLowerCase() + msg.slice(1)}.`;
}

/** The error of an HTTP status and its `detail`, in words a person can act on. */
export function plainWords(status, detail) {
  const said = typeof detail === "string" ? detail : "";
  if (status === 422 && Array.isArray(detail)) {
    return `Please check the input: ${detail.map(fieldProblem).join(" ")}`;
  }
  switch (status) {
    case 401:
      return key
        ? "The server did not accept this API key. Check it in the API key field at the top."
        : "This server needs an API key. Enter it in the API key field at the top.";
    case 403:
      return "This key can read but not start or send. Enter a write key to do that.";
    case 409:
      return `That ID is already taken. ${said}`;
    case 404:
      return `Not found. ${said}`;
    case 413:
      return `The message is too large. ${said}`;
    case 503:
      return "The server's database is not answering right now. Try again in a few seconds.";
    default:
      if (status >= 500)
        return "The server ran into a problem. Try again; if it persists, see its log.";
      return said || `The request failed (HTTP ${status}).`;
  }
}

/** Call the API; resolves to the JSON body, rejects with an ApiError in plain words. */
export async function request(method, path, options) {
  let answer;
  try {
    answer = await client.request(method, path, options);
  } catch (error) {
    if (!(error instanceof WorkflowCommError)) throw error;
    if (error.status === 0) {
      throw new ApiError(0, null, "The server could not be reached. Check that it is running.");
    }
    onAnswer(error.status);
    throw new ApiError(error.status, error.detail, plainWords(error.status, error.detail));
  }
  onAnswer(200);
  return answer;
}

/** A path segment, e.g. a workflow ID, safe inside a URL. */
export const segment = (value) => encodeURIComponent(value);
