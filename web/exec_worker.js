// Runs one task at a time for a browser worker (worker.js), off its connection's thread: the
// parent terminates this worker to stop a run that passes its wall time or was cancelled.
import { runTask } from "./exec.js";

onmessage = (ev) => {
  const { module, task } = ev.data;
  try {
    const result = runTask(module, task, (chunk) => postMessage({ type: "stdout", data: chunk.slice() }));
    postMessage({ type: "done", result });
  } catch (e) {
    postMessage({ type: "error", message: `the run failed: ${e && e.message ? e.message : e}` });
  }
};
