// A small agent graph drawn with React Flow (@xyflow/react). Canvas interactions are
// reported to Weftline through the tracker as `visualization_interaction` custom events,
// the way an app embedding Weftline's tracker would do it.
import { useCallback, useState } from "react";
import { createRoot } from "react-dom/client";
import {
  ReactFlow,
  ReactFlowProvider,
  addEdge,
  applyEdgeChanges,
  applyNodeChanges,
  useReactFlow,
} from "@xyflow/react";
import "@xyflow/react/dist/style.css";

const initialNodes = [
  { id: "planner", position: { x: 20, y: 40 }, data: { label: "Planner", agent: "agent-planner" } },
  { id: "coder", position: { x: 240, y: 40 }, data: { label: "Coder", agent: "agent-coder" } },
  { id: "reviewer", position: { x: 240, y: 180 }, data: { label: "Reviewer", agent: "agent-reviewer" } },
];
const initialEdges = [{ id: "planner-coder", source: "planner", target: "coder" }];

function Flow({ tracker }) {
  const [nodes, setNodes] = useState(initialNodes);
  const [edges, setEdges] = useState(initialEdges);
  const { getViewport } = useReactFlow();

  const report = useCallback(
    (payload) => {
      tracker.event("visualization_interaction", { ...payload, viewport: getViewport() });
      window.flowEvents = (window.flowEvents || 0) + 1;
    },
    [tracker, getViewport],
  );

  const onNodeClick = useCallback(
    async (_event, node) => {
      report({
        action: "node_click",
        node_id: node.id,
        node_type: node.type || "default",
        agent_id: node.data.agent,
        selected_nodes: [node.id],
      });
      console.log(`selected node ${node.id}`);
      const r = await fetch(`/api/data?node=${encodeURIComponent(node.id)}`);
      window.lastNodeFetch = await r.json();
    },
    [report],
  );
  const onNodeDragStop = useCallback(
    (_event, node) =>
      report({
        action: "node_drag_stop",
        node_id: node.id,
        agent_id: node.data.agent,
        metadata: { x: Math.round(node.position.x), y: Math.round(node.position.y) },
      }),
    [report],
  );
  const onConnect = useCallback(
    (conn) => {
      setEdges((eds) => addEdge(conn, eds));
      report({
        action: "edge_connect",
        edge_id: `${conn.source}-${conn.target}`,
        edge_source: conn.source,
        edge_target: conn.target,
      });
    },
    [report],
  );
  const onNodesChange = useCallback((ch) => setNodes((ns) => applyNodeChanges(ch, ns)), []);
  const onEdgesChange = useCallback((ch) => setEdges((es) => applyEdgeChanges(ch, es)), []);

  return (
    <ReactFlow
      nodes={nodes}
      edges={edges}
      onNodesChange={onNodesChange}
      onEdgesChange={onEdgesChange}
      onNodeClick={onNodeClick}
      onNodeDragStop={onNodeDragStop}
      onConnect={onConnect}
      onInit={() => {
        window.flowReady = true;
      }}
    />
  );
}

export function mountFlow(element, tracker) {
  createRoot(element).render(
    <ReactFlowProvider>
      <Flow tracker={tracker} />
    </ReactFlowProvider>,
  );
}
