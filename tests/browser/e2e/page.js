// One app page with the three unmodified browser clients side by side, wired the way an
// app wires them: the OpenReplay tracker records the session, @sentry/browser reports
// errors tagged with the tracker's session id, and the OpenTelemetry web SDK traces
// fetches (traceparent to the backend, session.id on each span); a React Flow canvas
// reports node clicks as canvas events. Configuration comes from the query string:
// weftline, key, dsn, backend, label.
import Tracker from '@openreplay/tracker';
import * as Sentry from '@sentry/browser';
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
const label = q.get('label');
const escape = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

// The tracker patches fetch when it is constructed; the OTel instrumentation registered
// after it wraps that, so the tracker sees the request with traceparent already set.
const tracker = new Tracker({
  projectKey: key,
  ingestPoint: weftline + '/ingest',
  __DISABLE_SECURE_MODE: true, // the page is http:
  forceSingleTab: true,
  network: { capturePayload: true },
  connAttemptCount: 3,
  connAttemptGap: 100,
});
window.tracker = tracker;

window.sentEvents = [];
Sentry.init({
  dsn: q.get('dsn'),
  release: 'web@1.0.0',
  environment: 'e2e',
  beforeSend(event) {
    const ex = event.exception && event.exception.values && event.exception.values[0];
    window.sentEvents.push({ id: event.event_id, type: ex && ex.type, value: ex && ex.value });
    return event;
  },
});

const provider = new WebTracerProvider({
  resource: resourceFromAttributes({ 'service.name': 'web-frontend' }),
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

// A React Flow canvas of the agent workflow; a node click becomes the app's own canvas
// event, tied to the tracker session.
const style = document.createElement('style');
style.textContent = flowCss;
document.head.appendChild(style);

async function onNodeClick(_event, node) {
  const r = await fetch(weftline + '/api/v1/events', {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-weftline-key': key },
    body: JSON.stringify({
      type: 'visualization_interaction',
      action: 'node_click',
      node_id: node.id,
      node_type: node.type || 'default',
      session_id: tracker.getSessionID(),
    }),
  });
  window.canvasPosted = r.status;
}

const nodes = [
  { id: 'planner-' + label, position: { x: 40, y: 40 }, data: { label: 'Planner node' } },
  { id: 'coder-' + label, position: { x: 260, y: 40 }, data: { label: 'Coder node' } },
];
const edges = [{ id: 'e1', source: nodes[0].id, target: nodes[1].id }];
createRoot(document.getElementById('canvas')).render(
  h(ReactFlow, { nodes, edges, onNodeClick, fitView: false, proOptions: { hideAttribution: true } }),
);

document.getElementById('checkout').addEventListener('click', async () => {
  const r = await fetch(backend + '/api/checkout?cart=' + label);
  // Not `window.checkout`: that name is the button itself (named access on window).
  window.checkoutResult = { status: r.status, body: await r.json() };
});

// The same bug in every session (one issue), with the cart in its message.
function readPrice(cart) {
  throw new TypeError('price is not a number in cart ' + cart);
}
document.getElementById('crash').addEventListener('click', () => readPrice(label));

// Everything buffered in the three clients, sent now (the test reads the result).
window.flushAll = async () => {
  await new Promise((r) => setTimeout(r, 600)); // fetch spans end after resource timing
  await provider.forceFlush();
  const sentry = await Sentry.flush(5000);
  tracker.forceFlushBatch();
  return sentry;
};

tracker.start({ userID: 'user-' + label }).then((started) => {
  if (started.success) {
    Sentry.setTag('openReplaySession.id', tracker.getSessionID());
    Sentry.setUser({ id: 'user-' + label });
  }
  window.started = started;
});
