// A React Flow canvas whose nodes are the app's agents. A click on a node starts that
// agent's run on the backend (fetch, traced by the OpenTelemetry web SDK: traceparent to
// the backend, session.id on the span) and reports the click as a canvas event; the
// OpenReplay tracker records the session. Configuration from the query string:
// weftline, key, backend.
import Tracker from '@openreplay/tracker';
import { WebTracerProvider, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-web';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { FetchInstrumentation } from '@opentelemetry/instrumentation-fetch';
import { registerInstrumentations } from '@opentelemetry/instrumentation';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { createElement as h } from 'react';
import { createRoot } from 'react-dom/client';
import { ReactFlow } from '@xyflow/react';
import flowCss from '@xyflow/react/dist/style.css'; // bundled as text (--loader:.css=text)

const q = new URLSearchParams(location.search);
const weftline = q.get('weftline');
const key = q.get('key');
const backend = q.get('backend');
const escape = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

const tracker = new Tracker({
  projectKey: key,
  ingestPoint: weftline + '/ingest',
  __DISABLE_SECURE_MODE: true, // the page is http:
  forceSingleTab: true,
  connAttemptCount: 3,
  connAttemptGap: 100,
});
window.tracker = tracker;

const provider = new WebTracerProvider({
  resource: resourceFromAttributes({ 'service.name': 'canvas-web' }),
  spanProcessors: [
    new SimpleSpanProcessor(
      new OTLPTraceExporter({ url: weftline + '/v1/traces', headers: { 'x-weftline-key': key } }),
    ),
  ],
});
provider.register();
registerInstrumentations({
  instrumentations: [
    new FetchInstrumentation({
      propagateTraceHeaderCorsUrls: [new RegExp('^' + escape(backend))],
      ignoreUrls: [new RegExp('^' + escape(weftline))],
      applyCustomAttributesOnSpan: (span) => {
        span.setAttribute('session.id', tracker.getSessionID() || '');
      },
    }),
  ],
});

const style = document.createElement('style');
style.textContent = flowCss;
document.head.appendChild(style);

async function onNodeClick(_event, node) {
  await fetch(weftline + '/api/v1/events', {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-weftline-key': key },
    body: JSON.stringify({
      type: 'visualization_interaction',
      action: 'node_click',
      node_id: node.id,
      node_type: 'agent',
      session_id: tracker.getSessionID(),
    }),
  });
  const r = await fetch(backend + '/api/agents/' + node.id + '/run', { method: 'POST' });
  window.run = { status: r.status, body: await r.json() };
}

const nodes = [
  { id: 'planner', type: 'default', position: { x: 40, y: 40 }, data: { label: 'Planner' } },
  { id: 'coder', type: 'default', position: { x: 260, y: 40 }, data: { label: 'Coder' } },
];
// No edges: nodes alone start runs (an edge's SVG path was logged as malformed by
// Chromium, the attribute masked with asterisks, in some runs).
const edges = [];
createRoot(document.getElementById('canvas')).render(
  h(ReactFlow, { nodes, edges, onNodeClick, fitView: false, proOptions: { hideAttribution: true } }),
);

window.flushAll = async () => {
  await new Promise((r) => setTimeout(r, 600)); // fetch spans end after resource timing
  await provider.forceFlush();
  tracker.forceFlushBatch();
  return true;
};

tracker.start({ userID: 'canvas-user' }).then((started) => {
  window.started = started;
});
