// The dashboard: start a workflow, follow it live, pick others from the recent list. Without
// the demo workflows (COMM_DEMO_WORKFLOWS=false, or routes mounted in an app of its own) there
// is no start form: any served workflow is followed by its ID or from the list.

import { apiKey, listenToAnswers, request, segment, setApiKey } from "./api.js";
import { config } from "./config.js";
import { FollowedWorkflow } from "./follow.js";
import { WorkflowHistory } from "./history.js";
import { RecentList } from "./recent.js";

const $ = (id) => document.getElementById(id);
const form = $("start-form");
const idInput = $("workflow-id");
const idPattern = new RegExp(config.workflowIdPattern);

const kind = () => form.elements.kind.value;
// The followed workflow's mailbox and timeline (not `history`: that is the browser's).
const workflowHistory = new WorkflowHistory();

let suggested = "";

function suggestId() {
  const random = crypto.getRandomValues(new Uint8Array(4));
  suggested = `${kind()}-${Array.from(random, (b) => b.toString(16).padStart(2, "0")).join("")}`;
  idInput.value = suggested;
}

function describeBounds() {
  const { bounds, defaults } = config;
  const [minSteps, maxSteps] = bounds.nSteps;
  const [minSeconds, maxSeconds] = bounds.stepSeconds;
  Object.assign($("n-steps"), { min: minSteps, max: maxSteps });
  Object.assign($("step-seconds"), {
    min: minSeconds,
    max: maxSeconds,
    value: defaults.stepSeconds,
  });
  Object.assign($("approval-timeout"), {
    min: 0,
    max: bounds.approvalTimeoutMax,
    value: defaults.approvalTimeout,
  });
  Object.assign($("idle-timeout"), {
    min: 0,
    max: bounds.idleTimeoutMax,
    value: defaults.idleTimeout,
  });
  idInput.maxLength = bounds.workflowIdMaxLength;
  $("message-topic").maxLength = bounds.topicMaxLength;
  $("n-steps-hint").textContent = `${minSteps} to ${maxSteps}.`;
  $("step-seconds-hint").textContent = `${minSeconds} to ${maxSeconds}; 0 runs at full speed.`;
  $("approval-timeout-hint").textContent = "How long it waits for Approve or Reject.";
  $("idle-timeout-hint").textContent = "It ends after this long without a request.";
}

// The form checks only what would not even make a URL; the server judges the rest (422).
function startRequest() {
  const id = idInput.value.trim();
  const steps = $("n-steps").value.trim();
  const seconds = $("step-seconds").value.trim();
  if (!id) return { problem: "Enter a workflow ID.", field: idInput };
  if (!idPattern.test(id)) {
    return { problem: `Workflow ID may use only ${config.workflowIdRule}.`, field: idInput };
  }
  if (!seconds) return { problem: "Seconds per step must be a number.", field: $("step-seconds") };
  const query = { step_seconds: seconds };
  if (kind() === "service") {
    // A service has no steps to count: it answers requests until idle for this long.
    const idle = $("idle-timeout").value.trim();
    if (!idle) return { problem: "Idle timeout must be a number.", field: $("idle-timeout") };
    query.idle_timeout = idle;
    return { path: `/start-workflow-service/${segment(id)}`, query };
  }
  if (!steps) return { problem: "Steps must be a whole number.", field: $("n-steps") };
  if (kind() === "messaging") {
    const timeout = $("approval-timeout").value.trim();
    if (!timeout)
      return { problem: "Approval timeout must be a number.", field: $("approval-timeout") };
    query.approval_timeout = timeout;
  }
  return { path: `/start-workflow-${kind()}/${segment(id)}/${encodeURIComponent(steps)}`, query };
}

function markInvalid(field) {
  for (const input of form.querySelectorAll("input")) input.removeAttribute("aria-invalid");
  if (field) {
    field.setAttribute("aria-invalid", "true");
    field.focus();
  }
}

async function start(event, followed, recent) {
  event.preventDefault();
  const error = $("start-error");
  error.textContent = "";
  $("start-note").textContent = "";
  const { problem, field, path, query } = startRequest();
  if (problem) {
    error.textContent = problem;
    markInvalid(field);
    return;
  }
  markInvalid(null);
  const button = $("start-button");
  button.disabled = true;
  try {
    const started = await request("POST", path, { query });
    $("start-note").textContent = started.created
      ? `Started ${started.kind} workflow ${started.workflow_id}.`
      : `Workflow ${started.workflow_id} already exists; following it.`;
    suggestId();
    await followWorkflow(started.workflow_id, followed, recent);
    recent.refresh();
  } catch (failure) {
    error.textContent = `Could not start the workflow. ${failure.message}`;
  } finally {
    button.disabled = false;
  }
}

async function followWorkflow(id, followed, recent) {
  if (await followed.follow(id)) {
    workflowHistory.show(id);
    recent.setCurrent(id);
    history.replaceState(null, "", `#${encodeURIComponent(id)}`);
  }
}

// The API key field: only needed when the server requires keys, which its 401 tells us.
function setUpKey(retry) {
  const field = $("api-key");
  const message = $("key-message");
  field.value = apiKey();
  field.addEventListener("input", () => setApiKey(field.value.trim()));
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    setApiKey(field.value.trim());
    message.textContent = ""; // a refusal of this key is then said (and announced) anew
    retry();
  });
  listenToAnswers((status) => {
    if (status === 401) {
      const ask = apiKey()
        ? "The server did not accept this API key. Please check it and enter it again."
        : "This server requires an API key. Please enter yours here, then press Use key.";
      // The list asks again every few seconds: say it, and take the focus, only once.
      if (message.textContent === ask) return;
      message.textContent = ask;
      field.setAttribute("aria-invalid", "true");
      field.focus();
    } else if (status < 400 && message.textContent) {
      message.textContent = "";
      field.removeAttribute("aria-invalid");
    }
  });
}

// Without the demo workflows: a form that follows a workflow by its ID, instead of starting one.
function setUpFollowForm(followed, recent) {
  $("start").hidden = true;
  $("intro").textContent =
    "Follow a DBOS workflow live: its status, every event it sets, any of its streams, and " +
    "messages to it. Choose one from the list, or enter its ID.";
  $("followed-empty").textContent = "Choose a workflow from the list, or enter its ID, to follow it here.";
  $("follow-form").hidden = false;
  $("follow-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const id = $("follow-id").value.trim();
    if (id) followWorkflow(id, followed, recent);
  });
}

function main() {
  let recent = null;
  const followed = new FollowedWorkflow({ onStatus: (workflow) => recent?.update(workflow) });
  recent = new RecentList({ onChoose: (id) => followWorkflow(id, followed, recent) });
  if (!config.demoWorkflows) {
    setUpFollowForm(followed, recent);
    startFollowing(followed, recent);
    return;
  }
  describeBounds();
  suggestId();

  form.addEventListener("submit", (event) => start(event, followed, recent));
  $("suggest-id").addEventListener("click", suggestId);
  const syncKind = () => {
    $("approval-field").hidden = kind() !== "messaging";
    $("idle-field").hidden = kind() !== "service";
    $("steps-field").hidden = kind() === "service";
    if (idInput.value === suggested) suggestId(); // keep an ID the person typed
  };
  for (const radio of form.elements.kind) radio.addEventListener("change", syncKind);
  syncKind(); // the browser may have restored another kind on reload
  startFollowing(followed, recent);
}

// The recent list, the API key field, and the workflow linked in the address (#id), if any.
function startFollowing(followed, recent) {
  const linked = decodeURIComponent(window.location.hash.slice(1));
  setUpKey(() => {
    recent.refresh();
    if (linked && !followed.id) followWorkflow(linked, followed, recent);
  });
  recent.start();
  if (linked) followWorkflow(linked, followed, recent);
}

main();
