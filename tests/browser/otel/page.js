// Test page: the unmodified OpenTelemetry web SDK with fetch instrumentation, exporting
// with the OTLP/HTTP (JSON) exporter to Weftline on another origin. Configuration
// comes from the query string: weftline, key, backend, session.
import { WebTracerProvider, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-web';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { FetchInstrumentation } from '@opentelemetry/instrumentation-fetch';
import { registerInstrumentations } from '@opentelemetry/instrumentation';
import { resourceFromAttributes } from '@opentelemetry/resources';

const q = new URLSearchParams(location.search);
const backend = q.get('backend');

const provider = new WebTracerProvider({
  resource: resourceFromAttributes({
    'service.name': 'web-frontend',
    'session.id': q.get('session'),
  }),
  spanProcessors: [
    new SimpleSpanProcessor(
      new OTLPTraceExporter({
        url: q.get('weftline') + '/v1/traces',
        headers: { 'x-weftline-key': q.get('key') },
      }),
    ),
  ],
});
provider.register();

registerInstrumentations({
  instrumentations: [
    new FetchInstrumentation({
      // The backend is cross-origin: traceparent is only injected when allowed here.
      propagateTraceHeaderCorsUrls: [new RegExp('^' + backend.replace(/[.]/g, '\\.'))],
    }),
  ],
});

async function run() {
  const res = await fetch(backend + '/api/cart');
  const body = await res.json();
  // Let the fetch instrumentation end its span (it waits for resource timing).
  await new Promise((r) => setTimeout(r, 500));
  await provider.forceFlush();
  window.__result = { status: res.status, backend: body };
}

run().catch((e) => {
  window.__result = { error: String(e) };
});
