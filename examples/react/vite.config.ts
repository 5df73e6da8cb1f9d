// The page is built into dist/, which examples/own_app.py serves at /app/ (same origin as its
// API: no CORS). `npm run dev` serves it with hot reload at http://localhost:5173/app/ and
// passes the API calls on to own_app on port 8001.
import { fileURLToPath } from "node:url";
import { defineConfig, searchForWorkspaceRoot } from "vite";

// The one browser client, imported from the project (src/workflow-hooks.ts), not copied.
const client = fileURLToPath(new URL("../../workflow_comm/js_client", import.meta.url));
const backend = "http://127.0.0.1:8001";

export default defineConfig({
  base: "/app/",
  // No React plugin: Vite's esbuild compiles JSX (tsconfig "jsx": "react-jsx"). Add
  // @vitejs/plugin-react for Fast Refresh while developing.
  server: {
    fs: { allow: [searchForWorkspaceRoot(process.cwd()), client] },
    proxy: Object.fromEntries(
      ["/drafts", "/workflows", "/workflow-events", "/workflow-stream", "/send-message"].map(
        (path) => [path, backend],
      ),
    ),
  },
});
