// React hooks over the browser client, workflow_comm/js_client/workflow-comm.js (imported from
// the project, not copied; its types come from workflow-comm.d.ts beside it). Each hook opens a
// live feed while its component is mounted and closes it when the component unmounts or its
// workflow changes. The feeds resume by themselves after a dropped connection or a server
// restart, with no gap and no repeat.
import { useEffect, useState, type Dispatch, type SetStateAction } from "react";
import {
  WorkflowClient,
  type LiveOptions,
  type LiveState,
  type Workflow,
  type WorkflowCommError,
} from "../../../workflow_comm/js_client/workflow-comm.js";

export { WorkflowClient, WorkflowCommError } from "../../../workflow_comm/js_client/workflow-comm.js";

/** A feed's state, and the last error it reported (cleared when it is open again). */
export interface Live {
  state: LiveState;
  error: WorkflowCommError | null;
}

const CONNECTING: Live = { state: "connecting", error: null };

function reportTo(setLive: Dispatch<SetStateAction<Live>>): LiveOptions {
  return {
    onState: (state) => setLive((live) => ({ state, error: state === "open" ? null : live.error })),
    onError: (error) => setLive((live) => ({ ...live, error })),
  };
}

/** Every value of the workflow's stream `key`, in order, each once, as they are written. */
export function useWorkflowStream<T = unknown>(
  client: WorkflowClient,
  workflowId: string,
  key: string,
): Live & { values: T[] } {
  const [values, setValues] = useState<T[]>([]);
  const [live, setLive] = useState(CONNECTING);
  useEffect(() => {
    setValues([]); // a new feed delivers from offset 0
    setLive(CONNECTING);
    const handle = client.followStream(workflowId, {
      key,
      onValue: (value: T) => setValues((earlier) => [...earlier, value]),
      ...reportTo(setLive),
    });
    return () => handle.close();
  }, [client, workflowId, key]);
  return { values, ...live };
}

/** The latest value of each of the workflow's events, kept current until it ends. */
export function useWorkflowEvents(
  client: WorkflowClient,
  workflowId: string,
): Live & { events: Record<string, unknown> } {
  const [events, setEvents] = useState<Record<string, unknown>>({});
  const [live, setLive] = useState(CONNECTING);
  useEffect(() => {
    setEvents({});
    setLive(CONNECTING);
    const handle = client.watchEvents(workflowId, {
      onEvent: ({ key, value }) => setEvents((earlier) => ({ ...earlier, [key]: value })),
      ...reportTo(setLive),
    });
    return () => handle.close();
  }, [client, workflowId]);
  return { events, ...live };
}

/** The workflow's status, kept current until it ends (then with its `result` or `error`). */
export function useWorkflowStatus(
  client: WorkflowClient,
  workflowId: string,
): Live & { workflow: Workflow | null } {
  const [workflow, setWorkflow] = useState<Workflow | null>(null);
  const [live, setLive] = useState(CONNECTING);
  useEffect(() => {
    setWorkflow(null);
    setLive(CONNECTING);
    const handle = client.watchStatus(workflowId, { onStatus: setWorkflow, ...reportTo(setLive) });
    return () => handle.close();
  }, [client, workflowId]);
  return { workflow, ...live };
}
